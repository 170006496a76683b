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


@shared_task(
    name="policies.refresh_shadow_values",
    acks_late=True,  # idempotent: the same log stores the same values
    time_limit=600,
    soft_time_limit=570,
    ignore_result=True,
)
def refresh_shadow_values() -> int:
    """Compute and store every shadow's off-policy value for the control room;
    answers how many shadows it stored."""
    from policies import services

    return len(services.shadow_values_refresh())
