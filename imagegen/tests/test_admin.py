"""The admin: runs listed with thumbnails, filters and search; quotas set per user."""

import pytest

from imagegen.models import UserQuota

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def test_runs_have_thumbnails_filters_and_search(admin_client):
    run = RunFactory(prompt="a copper kettle", status="succeeded")
    image = ImageFactory(owner=run.owner, run=run)
    RunFactory(prompt="a glass teapot")
    page = admin_client.get("/admin/imagegen/run/?q=kettle&status__exact=succeeded").content.decode()
    assert "a copper kettle" in page and "a glass teapot" not in page
    assert f"/admin/imagegen/image/{image.pk}/file/" in page
    assert "By generation type" in page or "generation type" in page.lower()
    thumbnail = admin_client.get(f"/admin/imagegen/image/{image.pk}/file/")
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/png"


def test_image_file_view_is_staff_only(client):
    image = ImageFactory()
    client.force_login(UserFactory())
    assert client.get(f"/admin/imagegen/image/{image.pk}/file/").status_code == 302  # to the admin login


def test_quota_is_set_on_the_user_page(admin_client):
    user = UserFactory(username="heavy")
    page = admin_client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "daily generation quota" in page.lower()
    UserQuota.objects.create(user=user, daily_limit=5)
    assert "heavy: 5 a day" in admin_client.get("/admin/imagegen/userquota/").content.decode()
