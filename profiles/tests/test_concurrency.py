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
    # The active policy's reward, and egreedy-v2's row learning from it.
    assert Reward.objects.filter(learned=False).count() == 1
    assert {r.learned_by for r in results} == {("egreedy-v2", "hybrid-v1")}
    for state in BanditState.objects.filter(user_id="u"):
        assert (state.reward_count, state.cumulative_reward) == (1, 1.0)
    assert BanditState.objects.filter(user_id="u").count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_events_of_one_user_all_reach_the_stored_profile(registry):
    """Each event adds itself to the stored counts under the profile row's
    lock, so no event is left out until the TTL."""
    from profiles.selectors import profile_get

    threads_n = 12
    barrier = threading.Barrier(threads_n)
    errors = []

    def post(i: int) -> None:
        barrier.wait()
        try:
            kind = "done" if i % 3 == 0 else "served"
            event_record(user_id="u", tip_id=f"t{i}", kind=kind, dwell_ms=60_000)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    profile = profile_get(user_id="u")
    assert profile.tip_volume_30d == 8 and profile.done_30d == 4
    assert profile.completion_rate_30d == 0.5
