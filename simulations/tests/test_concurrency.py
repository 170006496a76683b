"""One chunk executed by several workers at once: written once (PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from simulations import services, tasks
from simulations.models import Run, RunChunk, RunEvent

pytestmark = pytest.mark.postgres


@pytest.mark.django_db(transaction=True)
def test_a_chunk_run_concurrently_is_written_once_without_errors(registry):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    run = services.run_create(
        policies=["egreedy-v1", "egreedy-v2"],
        judge="rule",
        n_users=40,
        n_rounds=30,
        seed=3,
        actor=None,
        chunk_users=20,
    )
    threads_n = 4
    barrier = threading.Barrier(threads_n)
    results, errors = [], []

    def execute() -> None:
        barrier.wait()  # all race for the same pending chunk
        try:
            results.append(services.run_chunk_execute(run_id=run.id, chunk_index=1))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=execute) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.executed for r in results) == [False] * (threads_n - 1) + [True]
    assert RunEvent.objects.filter(run=run).count() == 2 * 20 * 30
    run.refresh_from_db()
    assert run.chunks_done == 1
    finished = services.run_execute(run_id=run.id)
    assert finished.summary["policies"][0]["pulls"] == 40 * 30


@pytest.mark.django_db(transaction=True)
def test_the_stalled_run_sweep_skips_a_chunk_another_transaction_holds(
    registry, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    run = services.run_create(
        policies=["egreedy-v1"],
        judge="rule",
        n_users=6,
        n_rounds=3,
        seed=3,
        actor=None,
        chunk_users=2,
    )
    sent = []
    monkeypatch.setattr(tasks.run_chunk, "delay", lambda *args: sent.append(args))
    # A worker fans the start out into the chunks' tasks: here, at once.
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)
    long_ago = timezone.now() - dt.timedelta(days=1)
    RunChunk.objects.filter(run=run).update(sent_at=long_ago)
    Run.objects.filter(pk=run.pk).update(updated_at=long_ago)
    locked, release = threading.Event(), threading.Event()

    def hold_chunk_1() -> None:  # as another sweep sending chunk 1 again
        try:
            with transaction.atomic():
                chunk = RunChunk.objects.select_for_update().get(run=run, index=1)
                RunChunk.objects.filter(pk=chunk.pk).update(sent_at=timezone.now())
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_chunk_1)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        resent = services.runs_resume_stalled()
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert waited < 5  # it did not wait for the holder's 10 s
    assert resent == [(run.id, 0), (run.id, 2)]  # without waiting for the lock
    assert sent == [(str(run.id), 0), (str(run.id), 2)]
    assert services.runs_resume_stalled() == []
    assert services.runs_resume_stalled(stalled_seconds=0) == [
        (run.id, 0),
        (run.id, 1),
        (run.id, 2),
    ]
