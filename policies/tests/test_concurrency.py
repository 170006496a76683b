"""Concurrent rewards for one user lose nothing and double nothing (PostgreSQL)."""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest
from django.db import connection

from oo_ml.auth import service_token_create
from policies import bandits
from policies.models import BanditState, Policy, Reward
from policies.services import reward_apply, rewards

pytestmark = pytest.mark.postgres


def _work(n: int) -> list[dict]:
    """n distinct rewards with distinct vectors, so a lost or doubled one shows."""
    rng = np.random.default_rng(7)
    return [
        {
            "tip_id": f"t{i}",
            "reward": float(rng.choice([-1.0, 0.1, 0.6, 1.0])),
            "features": {
                "hour_of_day": int(rng.integers(24)),
                "is_overdue": bool(rng.integers(2)),
                "task_age_days": float(rng.uniform(0, 40)),
                "priority": int(rng.integers(1, 5)),
            },
            "day_of_week": int(rng.integers(7)),
        }
        for i in range(n)
    ]


def _serial_sum(work: list[dict], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.vstack(
        [
            bandits.encode(
                [w["features"]],
                hours=[w["features"]["hour_of_day"]],
                day_of_week=w["day_of_week"],
                profile={},
                dimension=dimension,
            )
            for w in work
        ]
    )
    a, b = bandits.initial_state(dimension)
    return bandits.update_many(a, b, xs, np.array([w["reward"] for w in work]))


def _assert_state_is(policy: Policy, user_id: str, work: list[dict]) -> None:
    state = BanditState.objects.select_related("policy").get(
        policy=policy, user_id=user_id
    )
    a, b = _serial_sum(work, policy.dimension)
    assert state.reward_count == len(work)
    assert state.cumulative_reward == pytest.approx(sum(w["reward"] for w in work))
    np.testing.assert_allclose(state.a, a, rtol=0, atol=1e-9)
    np.testing.assert_allclose(state.b, b, rtol=0, atol=1e-9)
    assert Reward.objects.filter(policy=policy, user_id=user_id).count() == len(work)


@pytest.mark.django_db(transaction=True)
def test_threads_applying_rewards_to_one_new_user_lose_nothing(registry):
    work = _work(200)
    barrier = threading.Barrier(16)

    def apply(chunk: list[dict]) -> None:
        barrier.wait()  # all threads race for the same, not yet created, row
        try:
            for w in chunk:
                reward_apply(user_id="hot-user", profile={}, **w)
        finally:
            connection.close()

    threads = [threading.Thread(target=apply, args=(work[i::16],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    _assert_state_is(Policy.objects.get(role="active"), "hot-user", work)
    # egreedy-v2 learns from live rewards: every one, on its own encoding.
    _assert_state_is(Policy.objects.get(name="egreedy-v2"), "hot-user", work)


@pytest.mark.django_db(transaction=True)
def test_500_concurrent_rewards_over_http_to_gunicorn_all_applied(gunicorn_url):
    token = service_token_create(name="recommender")
    work = _work(500)

    def post(w: dict) -> int:
        body = json.dumps({"user_id": "hot-user", **w}).encode()
        request = urllib.request.Request(
            f"{gunicorn_url}/reward",
            data=body,
            headers={
                "Authorization": f"Token {token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(post, work))

    assert statuses == [200] * 500
    _assert_state_is(Policy.objects.get(role="active"), "hot-user", work)
    _assert_state_is(Policy.objects.get(name="egreedy-v2"), "hot-user", work)


@pytest.mark.django_db(transaction=True)
def test_one_event_id_sent_concurrently_is_applied_once(registry):
    work = _work(1)[0]
    barrier = threading.Barrier(8)
    results = []

    def apply() -> None:
        barrier.wait()
        try:
            results.append(
                reward_apply(user_id="u", profile={}, event_id="evt-1", **work)
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=apply) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.applied for r in results) == [False] * 7 + [True]
    assert all(r.replayed for r in results if not r.applied)
    _assert_state_is(Policy.objects.get(role="active"), "u", [work])


@pytest.mark.django_db(transaction=True)
def test_a_reward_whose_decision_a_reset_cleared_meanwhile_is_404(
    registry, api, monkeypatch
):
    """The reset commits between the reward reading its decision and committing:
    the deferred foreign key fails at commit, which must read as a 404."""
    decision = api.post(
        "/score", {"user_id": "u1", "candidates": [{"id": "a"}]}, format="json"
    ).json()
    lock = rewards._states_lock

    def reset_meanwhile(**kwargs):
        db = connection.settings_dict
        with psycopg.connect(  # another session, which commits
            host=db["HOST"],
            port=db["PORT"] or 5432,
            user=db["USER"],
            dbname=db["NAME"],
            autocommit=True,
        ) as other:
            other.execute(
                "DELETE FROM policies_decision WHERE id = %s",
                [decision["decision_id"]],
            )
        return lock(**kwargs)

    monkeypatch.setattr(rewards, "_states_lock", reset_meanwhile)
    response = api.post(
        "/reward",
        {
            "user_id": "u1",
            "tip_id": "a",
            "reward": 1.0,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )

    assert response.status_code == 404, response.json()
    assert response.json()["field"] == "decision_id"
    assert not Reward.objects.exists() and not BanditState.objects.exists()
