"""The Celery tasks, called as a worker calls them: by ids, in any order."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from oo_ml.celery import app
from oo_ml.errors import Conflict
from simulations import services, tasks
from simulations.models import Run, RunChunk, RunStatus
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
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_start(run_id=run.id)
    assert sent == []  # nothing before the commit
    for callback in callbacks:
        callback()

    assert sent == [(str(run.id), 0), (str(run.id), 1), (str(run.id), 2)]
    assert RunChunk.objects.filter(run=run, sent_at__isnull=True).count() == 0


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


# --- runs_resume_stalled: the sweep for brokers that lose a killed worker's task --


@pytest.fixture
def sent(monkeypatch):
    """The tasks sent, as (run id, chunk index)."""
    messages = []
    monkeypatch.setattr(
        tasks.run_chunk, "delay", lambda *args: messages.append(tuple(args))
    )
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)
    return messages


def ago(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)


def age(run: Run, *, sent: float, progress: float) -> None:
    """Pretend the run's tasks were sent, and its last chunk done, this long ago."""
    RunChunk.objects.filter(run=run, sent_at__isnull=False).update(sent_at=ago(sent))
    Run.objects.filter(pk=run.pk).update(updated_at=ago(progress))


LIMIT = settings.SIMULATION_CHUNK_TIME_LIMIT


def started_with_chunk_0_done() -> Run:
    """A run handed to the workers: chunk 0 done, the tasks of 1 and 2 lost."""
    run = create()
    services.run_start(run_id=run.id)
    tasks.run_chunk(str(run.id), 0)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.chunks_done == 1
    return run


def test_a_stalled_run_gets_its_pending_chunks_sent_again_and_finishes(
    sent, django_capture_on_commit_callbacks
):
    reference = services.run_execute(run_id=create().id)
    run = started_with_chunk_0_done()
    age(run, sent=LIMIT + 5, progress=LIMIT + 5)

    with django_capture_on_commit_callbacks(execute=True):
        resent = services.runs_resume_stalled()

    assert resent == [(run.id, 1), (run.id, 2)]
    assert sent == [(str(run.id), 1), (str(run.id), 2)]
    for args in sent:  # as a worker receives them
        tasks.run_chunk(*args)
    run.refresh_from_db()
    assert run.status == RunStatus.FINISHED
    assert run.summary == reference.summary
    mine, theirs = stored(run), stored(reference)
    assert all((mine[k] == theirs[k]).all() for k in mine)


def test_a_resend_restarts_the_wait(sent):
    run = started_with_chunk_0_done()
    age(run, sent=LIMIT + 5, progress=LIMIT + 5)
    assert len(services.runs_resume_stalled()) == 2
    assert services.runs_resume_stalled() == []  # the chunks were just sent
    fresh = RunChunk.objects.filter(run=run, index__in=[1, 2], sent_at__gt=ago(60))
    assert fresh.count() == 2


def test_a_queued_run_whose_tasks_were_all_lost_is_resumed(sent):
    run = create()
    services.run_start(run_id=run.id)
    age(run, sent=LIMIT + 5, progress=LIMIT + 5)
    assert services.runs_resume_stalled() == [(run.id, 0), (run.id, 1), (run.id, 2)]


def test_the_wait_is_a_chunks_time_limit_unless_told(sent):
    run = started_with_chunk_0_done()
    age(run, sent=LIMIT - 5, progress=LIMIT - 5)
    assert services.runs_resume_stalled() == []
    assert services.runs_resume_stalled(stalled_seconds=LIMIT - 10) == [
        (run.id, 1),
        (run.id, 2),
    ]


@pytest.mark.parametrize(
    ("sent_ago", "progress_ago"),
    [
        (LIMIT + 5, 10),  # a chunk done lately: the workers are on it
        (10, LIMIT + 5),  # its tasks sent lately (by a sweep, say)
    ],
)
def test_a_run_moving_or_just_sent_is_left_alone(sent, sent_ago, progress_ago):
    run = started_with_chunk_0_done()
    age(run, sent=sent_ago, progress=progress_ago)
    assert services.runs_resume_stalled() == []


@pytest.mark.parametrize("status", [RunStatus.FINISHED, RunStatus.FAILED])
def test_a_run_that_ended_is_left_alone(sent, status):
    run = started_with_chunk_0_done()
    if status == RunStatus.FAILED:
        services.run_fail(run_id=run.id, reason="chunk 1: boom")
    else:
        for index in (1, 2):
            tasks.run_chunk(str(run.id), index)
    age(run, sent=LIMIT + 5, progress=LIMIT + 5)
    assert Run.objects.get(pk=run.pk).status == status
    assert services.runs_resume_stalled() == []


def test_a_run_never_handed_to_the_workers_is_left_alone(sent):
    run = create()  # runsim in process, killed after its first chunk
    services.run_chunk_execute(run_id=run.id, chunk_index=0)
    Run.objects.filter(pk=run.pk).update(updated_at=ago(LIMIT * 10))
    assert services.runs_resume_stalled() == []


def test_the_task_sweeps_and_beat_runs_it_every_minute(sent):
    entry = app.conf.beat_schedule["resume-stalled-simulations"]
    assert entry == {"task": "simulations.resume_stalled", "schedule": 60}
    task = app.tasks[entry["task"]]  # as a worker finds it by beat's name
    run = started_with_chunk_0_done()
    age(run, sent=LIMIT + 5, progress=LIMIT + 5)
    assert task() == 2
    assert task() == 0
