"""One event id posted concurrently: one event, one reward (PostgreSQL)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection

from policies.models import BanditState, Reward
from policies.services import decision_make
from profiles.models import Event
from profiles.services import event_record

pytestmark = pytest.mark.postgres


@pytest.mark.django_db(transaction=True)
def test_one_event_id_posted_concurrently_is_stored_and_applied_once(registry):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    decision = decision_make(
        user_id="u",
        candidates=[{"id": "a", "features": {}}, {"id": "b", "features": {}}],
        context={"hour_of_day": 9, "day_of_week": 1},
        profile={},
        rng=np.random.default_rng(1),
    )
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results, errors = [], []

    def post() -> None:
        barrier.wait()  # all race for the same, not yet stored, event id
        try:
            results.append(
                event_record(
                    user_id="u",
                    tip_id="a",
                    kind="done",
                    dwell_ms=30_000,
                    decision_id=decision.id,
                    event_id="evt-1",
                )
            )
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(r.replayed for r in results) == [False] + [True] * (threads_n - 1)
    assert len({r.id for r in results}) == 1
    assert {r.reward for r in results} == {1.0}
    assert {r.trained for r in results} == {"egreedy-v1"}
    assert Event.objects.filter(event_id="evt-1").count() == 1
    assert Reward.objects.count() == 1
    state = BanditState.objects.get(user_id="u")
    assert (state.reward_count, state.cumulative_reward) == (1, 1.0)
