"""factory_boy factories for the rows tests need."""

import factory
from django.contrib.auth import get_user_model

from imagegen.models import Image, Run

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or PASSWORD)
        if create:
            self.save()


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    owner = factory.SubFactory(UserFactory)
    prompt = "a lighthouse at dawn"
    steps = 4
    total_steps = 4
    guidance_scale = 7.5
    width = 64
    height = 64
    seed = 1234
    model = "tiny"


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image

    owner = factory.SubFactory(UserFactory)
    file = factory.django.ImageField(width=64, height=64, format="PNG", filename="image.png")
    width = 64
    height = 64
    sha256 = "0" * 64
    kind = Image.Kind.OUTPUT
