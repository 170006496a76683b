#!/usr/bin/env python
"""Simulated decisions per second, end to end, with the events stored in PostgreSQL.

Times what ``python manage.py runsim`` does: create the run, simulate every chunk
and COPY its events in (``simulations.services``), then compute the summary from
the stored events; for 2,000 users x 100 rounds x 2 policies by default. Prints
each run, the median of three, where the time went (engine, storage, summary)
and the ratio to driving the API over HTTP (about 250 decisions/s, docs/performance.md).

    .venv/bin/python bench/simulate.py
    .venv/bin/python bench/simulate.py --users 10000 --runs 3
    .venv/bin/python bench/simulate.py --processes 2   # chunks on two processes
    .venv/bin/python bench/simulate.py --celery --processes 2   # a real worker

``--processes N`` runs the chunks on N processes (what N Celery workers would
do, without the broker); the run is then split into at least N chunks.
``--celery`` hands the run to a real ``celery -A oo_ml worker --concurrency N``
(started first, not timed) through the broker BENCH_SIM_BROKER_URL (default
RabbitMQ on 127.0.0.1, on a queue of its own) and polls the run until it ends.
BENCH_SIM_DATABASE_URL names the database (default
postgres://postgres@127.0.0.1:5432/oo_ml_bench_sim); it is created if missing and
migrated, and its simulation tables are emptied before each run (not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oo_ml_bench_sim"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
POLL_SECONDS = 0.01  # how often --celery reads the run's status
HTTP_DECISIONS_PER_SECOND = 250  # the old way: the API driven over HTTP


def database_create(url: str) -> None:
    name = urlparse(url).path.lstrip("/")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(url: str, migrate: bool = False) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
    # A key of this run's own: the app refuses its built-in one with DEBUG off.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def chunk_execute(run_id, index: int) -> None:
    from simulations import services

    services.run_chunk_execute(run_id=run_id, chunk_index=index)


def tables_empty() -> None:
    from django.db import connection

    from simulations.models import Run, RunChunk, RunEvent

    tables = [m._meta.db_table for m in (RunEvent, RunChunk, Run)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)}")
        cursor.execute(f"VACUUM ANALYZE {tables[0]}")


@contextlib.contextmanager
def celery_worker(url: str, broker_url: str, processes: int):
    """A real worker on its own queue, which this process's Celery sends to."""
    from oo_ml.celery import app

    queue = f"oo_ml-bench-{uuid.uuid4().hex[:12]}"
    app.conf.task_default_queue = queue
    if broker_url.startswith("filesystem"):
        for folder in app.conf.broker_transport_options.values():
            if isinstance(folder, str):
                Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        log = Path(tmp) / "worker.log"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": broker_url,
        }
        with open(log, "ab") as out:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "oo_ml",
                    "worker",
                    "--concurrency",
                    str(processes),
                    "--queues",
                    queue,
                    "--hostname",
                    f"{queue}@%h",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while " ready." not in log.read_text(errors="replace"):
                if worker.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the worker did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
            # A warm shutdown puts back a message not acked yet (the last
            # chunk's, when its run is seen finished before the ack): drop it.
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge(queue)
                conn.default_channel.queue_delete(queue)
                conn.default_channel.exchange_delete(queue)
                if broker_url.startswith("redis"):  # and kombu's binding keys
                    client = conn.default_channel.client
                    for key in client.scan_iter(f"*{queue}*"):
                        client.delete(key)


def run_on_workers(run_id):
    """Hand the run to the workers and poll it until it ends."""
    from simulations import services
    from simulations.models import Run, RunStatus

    services.run_start(run_id=run_id)
    ended = [RunStatus.FINISHED, RunStatus.FAILED]
    while not Run.objects.filter(pk=run_id, status__in=ended).exists():
        time.sleep(POLL_SECONDS)
    return services.run_get(run_id=run_id)


def one_run(args, pool: ProcessPoolExecutor | None) -> dict:
    from simulations import services
    from simulations.models import RunStatus

    chunk_users = args.chunk_users
    if args.processes > 1:
        chunk_users = min(chunk_users, math.ceil(args.users / args.processes))
    started = time.perf_counter()
    run = services.run_create(
        policies=args.policies,
        judge="rule",
        n_users=args.users,
        n_rounds=args.rounds,
        seed=args.seed,
        actor=None,
        actor_name="bench",
        chunk_users=chunk_users,
    )
    if args.celery:
        run = run_on_workers(run.id)
    elif pool is None:
        run = services.run_execute(run_id=run.id)
    else:
        futures = [
            pool.submit(chunk_execute, run.id, i) for i in range(run.chunks_total)
        ]
        for future in futures:
            future.result()
        run = services.run_finish(run_id=run.id)
    seconds = time.perf_counter() - started
    assert run.status == RunStatus.FINISHED, run.error
    return {
        "seconds": seconds,
        "decisions": run.decisions,
        "engine": run.engine_seconds,
        "storage": run.storage_seconds,
        "summary": run.summary_seconds,
        "chunks": run.chunks_total,
        "mean": [p["mean_reward"] for p in run.summary["policies"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--policies", nargs="+", default=["egreedy-v1", "egreedy-v2"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--chunk-users", type=int, default=2_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--celery",
        action="store_true",
        help="on a real Celery worker of --processes processes, through the broker",
    )
    args = parser.parse_args()

    url = os.environ.get("BENCH_SIM_DATABASE_URL", DEFAULT_URL)
    broker_url = os.environ.get("BENCH_SIM_BROKER_URL", DEFAULT_BROKER_URL)
    if args.celery:
        os.environ["CELERY_BROKER_URL"] = broker_url
        if broker_url.startswith("filesystem"):
            # The embedded broker's folders, of this benchmark's own.
            var_dir = tempfile.TemporaryDirectory(prefix="bench-broker-")
            os.environ["OO_ML_VAR_DIR"] = var_dir.name
    database_create(url)
    django_setup(url, migrate=True)
    workers = (
        celery_worker(url, broker_url, args.processes)
        if args.celery
        else contextlib.nullcontext()
    )
    pool = (
        # Spawned, not forked: a forked child would share this process's
        # database connection.
        ProcessPoolExecutor(
            args.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=django_setup,
            initargs=(url,),
        )
        if args.processes > 1 and not args.celery
        else None
    )
    results = []
    try:
        with workers:
            for number in range(1, args.runs + 1):
                tables_empty()
                result = one_run(args, pool)
                results.append(result)
                print(
                    f"run {number}: {result['decisions']:,} decisions in "
                    f"{result['seconds']:.2f} s = "
                    f"{result['decisions'] / result['seconds']:,.0f}/s "
                    f"(engine {result['engine']:.2f} s, "
                    f"storage {result['storage']:.2f} s summed over "
                    f"{result['chunks']} chunk(s); summary "
                    f"{result['summary']:.2f} s)"
                )
    finally:
        if pool is not None:
            pool.shutdown()
    where = f" of a Celery worker ({broker_url.split(':')[0]})" if args.celery else ""
    # Same seed, same results: every run must agree.
    assert all(r["mean"] == results[0]["mean"] for r in results), "not reproducible"
    median = statistics.median(r["seconds"] for r in results)
    rate = results[0]["decisions"] / median
    engine = statistics.median(r["engine"] for r in results)
    storage = statistics.median(r["storage"] for r in results)
    summary = statistics.median(r["summary"] for r in results)
    print(
        f"{args.users:,} users x {args.rounds} rounds x {len(args.policies)} "
        f"policies on {args.processes} process(es){where}: median {median:.2f} s, "
        f"{rate:,.0f} decisions/s, {rate / HTTP_DECISIONS_PER_SECOND:,.0f}x the "
        f"{HTTP_DECISIONS_PER_SECOND}/s of the API over HTTP; engine "
        f"{engine:.2f} s, storage {storage:.2f} s (summed over chunks, which "
        f"overlap on several processes), summary {summary:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
