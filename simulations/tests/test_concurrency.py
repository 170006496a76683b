"""One chunk executed by several workers at once: written once (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from simulations import services
from simulations.models import RunEvent

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
