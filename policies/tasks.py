"""Celery tasks: thin, idempotent, time-limited; each calls one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="policies.refit_shared_models",
    acks_late=True,  # idempotent: a refit with no new reward makes no version
    time_limit=1800,
    soft_time_limit=1740,
    ignore_result=True,
)
def refit_shared_models() -> int:
    """Refit every hybrid policy's shared model from the reward log; answers
    how many new versions were stored."""
    from policies import services

    return len(services.shared_models_refit())
