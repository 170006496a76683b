"""The bulk refresh: its Celery task, called as a function, and its command."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from oo_ml.celery import app
from profiles import tasks
from profiles.models import Profile
from profiles.services import events_record_bulk

pytestmark = pytest.mark.django_db


def served(*users: str) -> None:
    events_record_bulk([{"user_id": u, "tip_id": "t", "kind": "served"} for u in users])


def profile(user_id: str, *, age: dt.timedelta, volume: int = 99) -> None:
    Profile.objects.create(
        user_id=user_id, tip_volume_30d=volume, computed_at=timezone.now() - age
    )


def volumes() -> dict[str, int]:
    return dict(Profile.objects.values_list("user_id", "tip_volume_30d"))


def test_the_task_refreshes_profiles_over_half_a_ttl_old_and_new_users():
    served("old", "young", "new")
    ttl = settings.PROFILE_TTL_SECONDS
    profile("old", age=dt.timedelta(seconds=ttl / 2 + 5))
    profile("young", age=dt.timedelta(seconds=ttl / 2 - 60))

    assert tasks.refresh_stale() == 2

    assert volumes() == {"old": 1, "young": 99, "new": 1}
    # Idempotent: run again at once, nothing is due.
    assert tasks.refresh_stale() == 0
    assert volumes() == {"old": 1, "young": 99, "new": 1}


def test_a_user_whose_events_all_aged_out_is_refreshed_to_empty():
    events_record_bulk(
        [
            {
                "user_id": "gone",
                "tip_id": "t",
                "kind": "served",
                "occurred_at": timezone.now() - dt.timedelta(days=40),
            }
        ]
    )
    profile("gone", age=dt.timedelta(hours=1), volume=5)
    assert tasks.refresh_stale() == 1
    assert volumes() == {"gone": 0}


def test_an_empty_profile_of_a_dormant_user_is_left_alone_until_they_return():
    profile("dormant", age=dt.timedelta(hours=1), volume=0)
    assert tasks.refresh_stale() == 0

    served("dormant")  # they are back: their empty profile is out of date

    assert tasks.refresh_stale() == 1
    assert volumes() == {"dormant": 1}


def test_the_task_is_registered_as_the_schedule_names_it():
    task = app.tasks["profiles.refresh_stale"]
    assert task.name == "profiles.refresh_stale"
    assert task.acks_late is True
    assert task.time_limit and task.soft_time_limit < task.time_limit
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-stale-profiles"]
    assert entry["task"] == "profiles.refresh_stale"
    assert entry["schedule"] == settings.PROFILE_TTL_SECONDS / 2


def test_the_command_refreshes_named_all_or_stale_users(capsys):
    served("a", "b", "b")
    call_command("refresh_profiles", "a")
    assert volumes() == {"a": 1}
    assert "1 profiles refreshed" in capsys.readouterr().out

    call_command("refresh_profiles", "--all")
    assert volumes() == {"a": 1, "b": 2}

    Profile.objects.filter(user_id="a").update(
        tip_volume_30d=7, computed_at=timezone.now() - dt.timedelta(hours=1)
    )
    call_command("refresh_profiles")  # the stale ones: only a
    assert volumes() == {"a": 1, "b": 2}
    assert "1 profiles refreshed" in capsys.readouterr().out.splitlines()[-1]
