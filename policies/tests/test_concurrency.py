"""Concurrent rewards for one user lose nothing and double nothing (PostgreSQL)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from oo_ml.auth import service_token_create
from oo_ml.errors import NotFound
from policies import bandits, rollups
from policies.models import BanditState, Policy, Reward
from policies.services import reward_apply, rewards, user_reset

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
def test_500_concurrent_rewards_over_http_to_bin_serve_all_applied(served):
    token = service_token_create(name="recommender")
    work = _work(500)

    def post(w: dict) -> int:
        body = json.dumps({"user_id": "hot-user", **w}).encode()
        request = urllib.request.Request(
            f"{served.url}/reward",
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


class Client:
    """A recommender sending rewards, each with its own ``event_id``: a reward whose
    answer did not arrive (dropped connection, 503) is sent again, as the API asks,
    and counts once. Records every failed try."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.acknowledged = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def reward(self, event_id: str, work: dict) -> None:
        body = json.dumps({"user_id": "hot-user", "event_id": event_id, **work})
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(
                f"{self.url}/reward",
                data=body.encode(),
                headers={
                    "Authorization": f"Token {self.token}",
                    "Content-Type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 200
                with self.lock:
                    self.acknowledged += 1
                return
            except urllib.error.HTTPError as error:
                failure = str(error.code)
                if error.code != 503:
                    raise
            except (OSError, http.client.HTTPException) as error:
                failure = type(error).__name__
            with self.lock:
                self.failures.append(failure)
            assert time.monotonic() < deadline, f"never acknowledged: {self.failures}"
            time.sleep(0.05)

    def send_all(self, work: list[dict], fault, after: int) -> None:
        """Send ``work`` from 32 threads; ``fault()`` once ``after`` are answered."""
        with ThreadPoolExecutor(max_workers=32) as pool:
            sent = [pool.submit(self.reward, f"evt-{i}", w) for i, w in enumerate(work)]
            while self.acknowledged < after:
                assert not any(f.done() and f.exception() for f in sent)
                time.sleep(0.01)
            fault()
            for future in sent:
                future.result()


def _until(condition, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_under_load_is_replaced_and_loses_nothing(served):
    """SIGKILL one worker mid-load: the server starts another; the requests it held
    fail without an answer and are sent again; every reward counts exactly once."""
    client = Client(served.url, service_token_create(name="recommender"))
    work = _work(300)
    workers = served.workers()
    victim = workers[0]

    client.send_all(work, lambda: os.kill(victim, signal.SIGKILL), after=100)

    _until(lambda: len(served.workers()) == len(workers))
    assert victim not in served.workers()
    assert served.proc.poll() is None
    assert client.acknowledged == len(work)
    assert all(f != "500" for f in client.failures), client.failures
    _assert_state_is(Policy.objects.get(role="active"), "hot-user", work)
    _assert_state_is(Policy.objects.get(name="egreedy-v2"), "hot-user", work)


@pytest.mark.django_db(transaction=True)
def test_database_connections_dropped_under_load_lose_nothing(served):
    """As on a PostgreSQL restart: every connection of the server's workers is
    closed by the database mid-load. A request on a dropped connection answers 503
    (never 500) and is sent again; the workers reconnect; every reward counts once."""
    client = Client(served.url, service_token_create(name="recommender"))
    work = _work(300)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]

    def drop_connections() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> %s",
                [ours],
            )
            assert cursor.fetchone()[0] > 0

    client.send_all(work, drop_connections, after=100)

    assert client.acknowledged == len(work)
    assert "503" in client.failures  # the fault did happen
    assert set(client.failures) <= {"503"}, client.failures
    assert served.proc.poll() is None
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
    lock = rewards._states_read

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

    monkeypatch.setattr(rewards, "_states_read", reset_meanwhile)
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


@pytest.mark.django_db(transaction=True)
def test_a_reward_whose_states_moved_before_its_write_is_done_again_locked(
    registry, monkeypatch
):
    """A reward reads the states without locks, then another reward for the
    same user commits before its write: the write must change nothing, and the
    reward be applied again under the locks, on the new states."""
    first, second = _work(2)
    reward_apply(user_id="u", profile={}, **first)  # the states exist
    read = rewards._states_read
    calls = []

    def another_commits_meanwhile(**kwargs):
        states = read(**kwargs)
        calls.append(kwargs["locked"])
        if len(calls) == 1:
            db = connection.settings_dict
            with psycopg.connect(
                host=db["HOST"],
                port=db["PORT"] or 5432,
                user=db["USER"],
                dbname=db["NAME"],
                autocommit=True,
            ) as other:  # stands for a reward committed by another worker
                other.execute(
                    "UPDATE policies_banditstate SET reward_count = reward_count"
                    " WHERE user_id = 'u'"
                )
        return states

    monkeypatch.setattr(rewards, "_states_read", another_commits_meanwhile)
    result = reward_apply(user_id="u", profile={}, **second)

    assert calls == [False, True]  # unlocked, moved, then under the locks
    assert result.applied and result.reward_count == 2
    for policy in Policy.objects.filter(learns_live=True):
        _assert_state_is(policy, "u", [first, second])  # one row each, no more
    stored = rollups.activity_stored()
    assert sum(c[3] + c[5] for c in stored.values()) == Reward.objects.count()


@pytest.mark.django_db(transaction=True)
def test_a_plain_reward_takes_no_lock_and_two_statements(registry):
    reward_apply(user_id="u", profile={}, **_work(1)[0])  # the states exist
    with CaptureQueriesContext(connection) as queries:
        result = reward_apply(user_id="u", profile={}, **_work(2)[1])
    sql = [q["sql"] for q in queries]
    assert result.applied
    assert len(sql) == 2, sql
    assert "FOR UPDATE" not in sql[0]
    assert "policies_state_moved()" in sql[1]
    assert not connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_before_migration_0010_a_reward_takes_the_locked_path(registry):
    """New code on a database without policies_state_moved() (the 0009 release
    rolls code out before migrating): rewards still apply, under the locks."""
    work = _work(2)
    reward_apply(user_id="u", profile={}, **work[0])  # the states exist
    with connection.cursor() as cursor:
        cursor.execute("ALTER FUNCTION policies_state_moved() RENAME TO moved_away")
    try:
        result = reward_apply(user_id="u", profile={}, **work[1])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER FUNCTION moved_away() RENAME TO policies_state_moved")
    assert result.applied and result.reward_count == 2
    _assert_state_is(Policy.objects.get(role="active"), "u", work)


@pytest.mark.django_db(transaction=True)
def test_rewards_racing_resets_are_all_applied_never_refused(registry):
    """15 threads reward one user while another resets them 30 times: every
    reward applies (to the states before a reset, or to new ones after it), none
    is refused for want of a state, and the roll-ups count every row logged."""
    work = _work(300)
    reward_apply(user_id="r", profile={}, **work[0])
    barrier = threading.Barrier(16)
    errors = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            if i == 0:
                for _ in range(30):
                    with contextlib.suppress(NotFound):  # nothing since the last
                        user_reset(user_id="r", actor=None)
            else:
                for w in work[i::15]:
                    assert reward_apply(user_id="r", profile={}, **w).applied
        except Exception as error:  # collected: the assertion below names them
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for state in BanditState.objects.filter(user_id="r"):
        logged = Reward.objects.filter(policy=state.policy, user_id="r").count()
        assert state.reward_count <= logged  # the log keeps what a reset cleared
    stored = rollups.activity_stored()
    assert sum(c[3] + c[5] for c in stored.values()) == Reward.objects.count()
