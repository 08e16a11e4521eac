"""row_by reads one row with plain SQL (the reads every page makes): it must give the same model
instance the ORM gives, every value converted the same way, on SQLite as on PostgreSQL."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from imagegen.models import JobStatus, Run
from imagegen.selectors import row_by

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def fields_of(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_a_row_read_with_plain_sql_is_the_orms_row():
    owner = UserFactory(is_staff=True)
    now = timezone.now()
    run = RunFactory(
        owner=owner,
        generation_type=Run.GenerationType.IMAGE_TO_IMAGE,
        init_image=ImageFactory(owner=owner),
        strength=Decimal("0.35"),
        status=JobStatus.SUCCEEDED,
        attempts=2,
        sent_at=now - timedelta(seconds=5),
        started_at=now - timedelta(seconds=4),
        heartbeat_at=now - timedelta(seconds=1),
        finished_at=now,
    )
    for model, pk, owner_filter in [(Run, run.pk, {"owner": owner.pk}), (get_user_model(), owner.pk, {})]:
        from_orm = model.objects.get(pk=pk)
        read = row_by(model, pk=pk, **owner_filter)
        assert type(read) is model and read.pk == pk and not read._state.adding
        assert fields_of(read) == fields_of(from_orm)
        assert {name: type(value) for name, value in fields_of(read).items()} == {
            name: type(value) for name, value in fields_of(from_orm).items()
        }


def test_no_row_is_none():
    run = RunFactory()
    assert row_by(Run, pk=uuid.uuid4()) is None
    assert row_by(Run, pk=run.pk, owner=UserFactory().pk) is None  # another user's run
