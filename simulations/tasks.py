"""Celery tasks for simulation runs: thin, by id, and idempotent.

A run starts as one task that fans out into one task per chunk, so starting
one costs a request one message whatever its size. A chunk already done is
skipped, so a redelivered or duplicated message writes nothing twice; the
worker that completes the last chunk writes the summary. ``resume_stalled``, on
beat's schedule, sends again the chunks a broker without redelivery lost with a
killed worker.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    name="simulations.run_chunk",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.SIMULATION_CHUNK_TIME_LIMIT,
    soft_time_limit=settings.SIMULATION_CHUNK_TIME_LIMIT - 30,
)
def run_chunk(run_id: str, chunk_index: int) -> None:
    from simulations import services  # services enqueue these tasks

    services.run_chunk_work(run_id=run_id, chunk_index=chunk_index)


@shared_task(
    name="simulations.run_fan_out",
    acks_late=True,  # idempotent: chunks sent twice are skipped once done
    time_limit=300,
    soft_time_limit=270,
    ignore_result=True,
)
def run_fan_out(run_id: str) -> int:
    """Send one task per pending chunk of a run just started; answers how many."""
    from simulations import services

    return services.run_chunks_send(run_id=run_id)


@shared_task(
    name="simulations.resume_stalled",
    acks_late=True,  # idempotent: a second sweep finds nothing stalled
    time_limit=120,
    soft_time_limit=100,
    ignore_result=True,
)
def resume_stalled() -> int:
    """Send again the tasks of stalled runs' pending chunks; answers how many."""
    from simulations import services

    return len(services.runs_resume_stalled())
