"""Runs on real Celery workers: subprocesses on RabbitMQ and the test database.

The kill test is the simulations' promise (docs/simulations.md): a worker killed
mid-chunk loses and duplicates no event. It holds because a chunk is all or
nothing and skipped once done, and a task is acked only when it has run
(``acks_late``), so RabbitMQ delivers the killed worker's message again to the next
worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from django.core.management import CommandError
from django.db import connection

from conftest import _database_url, _free_port, bin_run_start
from oo_ml.tests.llm_server import MODEL
from simulations import services, tasks
from simulations.models import ChunkStatus, JudgeAnswer, Run, RunEvent, RunStatus
from simulations.tests.test_llm_runs import persona_player
from simulations.tests.test_runsim import DONE_WHEN, runsim
from simulations.tests.test_services import stored

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def create(**overrides) -> Run:
    args = dict(
        policies=["egreedy-v1", "egreedy-v2"],
        judge="rule",
        n_users=2_400,
        n_rounds=100,
        seed=42,
        actor=None,
        # 80,000 decisions a chunk: about half a second to a second each here.
        chunk_users=400,
    )
    return services.run_create(**{**args, **overrides})


def wait_for(condition, *, timeout: float, what: str, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
    return result


def ended(run: Run, timeout: float = 120) -> Run:
    return wait_for(
        lambda: Run.objects.filter(
            pk=run.pk, status__in=[RunStatus.FINISHED, RunStatus.FAILED]
        ).first(),
        timeout=timeout,
        what=f"run {run.id} to end",
        every=0.1,
    )


def copying_events() -> bool:
    """Is a worker inside a chunk's transaction, streaming its events in?"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
            [f"COPY {RunEvent._meta.db_table} %"],
        )
        return cursor.fetchone()[0] > 0


def task_ids(worker, what: str) -> set[str]:
    """The ids of the tasks whose line ``what`` (received, succeeded) it logged."""
    pattern = rf"Task simulations\.run_chunk\[([0-9a-f-]+)\] {what}"
    return set(re.findall(pattern, worker.log_text()))


def kill_mid_chunk(worker, run: Run) -> None:
    """SIGKILL the worker's group once a chunk is in and the next is being
    written, and check the one cut short left nothing behind."""
    wait_for(
        lambda: Run.objects.get(pk=run.pk).chunks_done >= 1 and copying_events(),
        timeout=120,
        what="a chunk done and another being written",
    )
    worker.kill()

    # The pool's children died with it.
    wait_for(lambda: not worker.group_running(), timeout=5, what="the group to die")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert 1 <= run.chunks_done < run.chunks_total
    # Only whole chunks' events are stored.
    done = run.chunks.filter(status=ChunkStatus.DONE)
    assert done.count() == run.chunks_done
    assert RunEvent.objects.filter(run=run).count() == sum(
        done.values_list("events", flat=True)
    )


def assert_same_results(run: Run, reference: Run) -> None:
    assert run.status == RunStatus.FINISHED, run.error
    assert run.chunks_done == run.chunks_total
    assert RunEvent.objects.filter(run=run).count() == reference.decisions
    mine, theirs = stored(run), stored(reference)
    assert all((mine[key] == theirs[key]).all() for key in mine)
    assert run.summary == reference.summary


def test_a_run_handed_to_a_worker_finishes_with_the_in_process_results(
    celery_queue, celery_worker
):
    reference = services.run_execute(
        run_id=create(n_users=600, chunk_users=150, seed=7).id
    )
    run = create(n_users=600, chunk_users=150, seed=7)
    celery_worker(celery_queue, concurrency=2)

    services.run_start(run_id=run.id)

    assert_same_results(ended(run), reference)
    assert not run.chunks.filter(sent_at__isnull=True).exists()


def test_a_worker_killed_mid_chunk_loses_and_duplicates_no_event(
    celery_queue, celery_worker
):
    reference = services.run_execute(run_id=create().id)
    run = create()
    first = celery_worker(celery_queue, concurrency=1)
    # Chunk 0 goes twice, as a broker delivers again a message whose chunk
    # committed just before its worker died: the second finds it done.
    tasks.run_chunk.delay(str(run.id), 0)
    services.run_start(run_id=run.id)

    kill_mid_chunk(first, run)

    cut_short = task_ids(first, "received") - task_ids(first, "succeeded")

    second = celery_worker(celery_queue, concurrency=1)

    assert_same_results(ended(run), reference)
    # RabbitMQ delivered the task the first worker held (one: prefetch 1) to
    # the second.
    assert len(cut_short) == 1
    assert cut_short <= task_ids(second, "succeeded")


def test_the_llm_judge_on_two_workers_shares_one_cache_and_reruns_from_it(
    celery_queue, celery_worker, fake_llm
):
    """Chunks on two worker processes ask the same prompts at the same time:
    each keeps the first answer kept, so the run is what a rerun in this
    process, with the model gone, reads back from the cache."""
    server = fake_llm(persona_player)
    llm = dict(judge="llm", n_users=40, n_rounds=6, chunk_users=10)
    run = create(**llm)
    broker = dataclasses.replace(
        celery_queue,
        worker_env={
            **celery_queue.worker_env,
            "OO_ML_LLM_BASE_URL": server.url,
            "OO_ML_LLM_MODEL": MODEL,
        },
    )
    celery_worker(broker, concurrency=2)
    services.run_start(run_id=run.id)
    run = ended(run, timeout=120)
    assert run.status == RunStatus.FINISHED, run.error
    assert 0 < JudgeAnswer.objects.count() <= server.count
    assert run.summary["judge"]["fallbacks_invalid"] > 0

    server.stop()
    rerun = services.run_execute(run_id=create(**llm).id)
    assert rerun.summary["judge"]["asked"] == 0
    mine, theirs = stored(rerun), stored(run)
    assert all((mine[key] == theirs[key]).all() for key in mine)
    assert rerun.summary["policies"] == run.summary["policies"]


# --- the embedded broker of `make run` ----------------------------------------


def test_the_embedded_broker_loses_a_killed_workers_chunk_until_the_sweep(
    embedded_broker, celery_worker
):
    reference = services.run_execute(run_id=create(n_users=1_600).id)
    for _attempt in range(3):
        run = create(n_users=1_600)
        first = celery_worker(embedded_broker, concurrency=1)
        services.run_start(run_id=run.id)
        kill_mid_chunk(first, run)
        cut_short = task_ids(first, "received") - task_ids(first, "succeeded")
        if cut_short:
            break
        # The chunk committed in the few milliseconds between spotting its
        # write and the kill: nothing was cut short, so try again on a new run.
    else:
        pytest.fail("three kills in a row came after the chunk's commit")
    (cut_short,) = cut_short

    second = celery_worker(embedded_broker, concurrency=1)
    wait_for(
        lambda: Run.objects.get(pk=run.pk).chunks_done == run.chunks_total - 1,
        timeout=120,
        what="every chunk but the lost one",
    )
    time.sleep(2.5)  # the broker is polled every second: nothing more comes
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    (lost,) = run.chunks.filter(status=ChunkStatus.PENDING).values_list(
        "index", flat=True
    )
    assert cut_short not in task_ids(second, "received")

    resumed = services.runs_resume_stalled(stalled_seconds=0)
    # (A retried attempt's run may still have chunks under way: not this one's.)
    assert [entry for entry in resumed if entry[0] == run.id] == [(run.id, lost)]

    assert_same_results(ended(run), reference)


def test_make_run_serves_and_its_worker_executes_a_run(embedded_broker, tmp_path):
    """bin/run, as `make run` starts it, with the test database."""
    reference = services.run_execute(run_id=create(n_users=40, chunk_users=10).id)
    run = create(n_users=40, chunk_users=10)
    port = _free_port()
    env = {
        **os.environ,
        **embedded_broker.worker_env,
        "VENV": sys.prefix,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "DATABASE_URL": _database_url(),
    }
    log = tmp_path / "run.log"
    script = bin_run_start(env, log)
    try:
        services.run_start(run_id=run.id)
        assert_same_results(ended(run, timeout=60), reference)
        health = wait_for(
            lambda: http_json(f"http://127.0.0.1:{port}/health"),
            timeout=30,
            what="bin/serve",
            every=0.2,
        )
        assert {k: health[k] for k in ("ok", "database", "broker")} == {
            "ok": True,
            "database": True,
            "broker": True,
        }
    finally:
        os.killpg(script.pid, signal.SIGINT)  # Ctrl-C in its terminal
        with contextlib.suppress(subprocess.TimeoutExpired):
            script.wait(timeout=20)
        # Whatever of its group outlives it goes too (once, after a SIGTERM, the
        # worker with its embedded beat hung in its shutdown).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        script.wait()
        print(f"--- bin/run: {log}\n{log.read_text(errors='replace')}")


def http_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


# --- runsim --workers ---------------------------------------------------------


def test_runsim_on_the_workers_prints_what_it_prints_in_process(
    celery_queue, celery_worker
):
    here, _ = runsim(*DONE_WHEN, "--chunk-users", "2")
    celery_worker(celery_queue, concurrency=2)

    there, progress = runsim(*DONE_WHEN, "--chunk-users", "2", "--workers")

    assert there == here
    assert "sent to the Celery workers" in progress
    assert "3/3 chunks" in progress
    assert Run.objects.filter(status=RunStatus.FINISHED).count() == 2


def test_runsim_on_the_workers_says_why_the_run_failed_there(
    celery_queue, celery_worker, monkeypatch
):
    def unrunnable(**kwargs) -> Run:
        run = create_run(**kwargs)
        run.policy_specs[1]["algorithm"] = "nope"  # what no worker can simulate
        run.save(update_fields=["policy_specs"])
        return run

    create_run = services.run_create
    monkeypatch.setattr(services, "run_create", unrunnable)
    celery_worker(celery_queue, concurrency=1)

    with pytest.raises(CommandError, match="failed: chunk 0: ValueError: .*'nope'"):
        runsim(*DONE_WHEN, "--workers")


def test_runsim_stops_waiting_for_absent_workers_and_leaves_the_run_queued(
    celery_queue,
):
    with pytest.raises(CommandError, match="still queued after 1 s .*0/1 chunks"):
        runsim(*DONE_WHEN, "--workers", "--timeout", "1")
    run = Run.objects.get()
    assert run.status == RunStatus.QUEUED
    assert run.chunks.get().sent_at is not None  # its task waits in the queue
