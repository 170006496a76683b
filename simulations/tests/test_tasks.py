"""The Celery tasks, called as a worker calls them: by ids, in any order."""

from __future__ import annotations

import pytest

from oo_ml.errors import Conflict
from simulations import services, tasks
from simulations.models import RunStatus
from simulations.tests.test_services import create, stored

pytestmark = pytest.mark.django_db


def test_chunks_in_any_order_and_twice_give_the_in_process_results():
    reference = services.run_execute(run_id=create().id)
    run = create()

    for index in (2, 0, 1, 0, 2):  # redelivered messages included
        tasks.run_chunk(str(run.id), index)

    run.refresh_from_db()
    assert run.status == RunStatus.FINISHED  # the last chunk in wrote the summary
    assert run.summary == reference.summary
    mine, theirs = stored(run), stored(reference)
    assert all((mine[k] == theirs[k]).all() for k in mine)


def test_start_sends_one_task_per_pending_chunk_after_the_commit(
    django_capture_on_commit_callbacks, monkeypatch
):
    run = create()
    sent = []
    monkeypatch.setattr(tasks.run_chunk, "delay", lambda *args: sent.append(args))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_start(run_id=run.id)
    assert sent == []  # nothing before the commit
    for callback in callbacks:
        callback()

    assert sent == [(str(run.id), 0), (str(run.id), 1), (str(run.id), 2)]


def test_a_run_that_is_not_queued_cannot_start_again():
    run = services.run_execute(run_id=create().id)
    with pytest.raises(Conflict, match="finished, not queued"):
        services.run_start(run_id=run.id)


def test_a_failing_chunk_fails_the_run_with_the_reason(monkeypatch):
    run = create()

    def broken(**kwargs):
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(services.engine, "simulate", broken)
    with pytest.raises(RuntimeError):
        tasks.run_chunk(str(run.id), 0)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == "chunk 0: RuntimeError: judge exploded"
