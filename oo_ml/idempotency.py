"""Idempotent writes keyed by a caller's event id, shared by /reward and /events.

A request carrying an event id is stored with a digest of everything it said.
The same id again with the same digest is a replay (changes nothing, says so);
with another digest it is a conflict (409).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from django.db import models

from oo_ml.errors import Conflict

M = TypeVar("M", bound=models.Model)

# Event ids the platform makes itself: ``event:<uuid>`` is the reward an
# accepted /events reaction implied (profiles.services.reward_event_id). A
# caller's id may not start so, or it could forge or block that reward.
EVENT_REWARD_PREFIX = "event:"
RESERVED_EVENT_ID_PREFIXES = (EVENT_REWARD_PREFIX,)


def fingerprint(**request: Any) -> str:
    """A digest of everything a request says, to tell a replay from a reuse."""
    canonical = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def previous_or_conflict(
    queryset: models.QuerySet[M], *, event_id: str, fingerprint: str
) -> M | None:
    """The row stored earlier under ``event_id`` if this request is a replay of
    it; None if the id is new; Conflict if the id was used for another request.
    ``queryset``'s model has ``event_id`` and ``fingerprint`` fields."""
    previous = queryset.filter(event_id=event_id).first()
    if previous is None:
        return None
    if previous.fingerprint != fingerprint:
        raise Conflict(
            f"Event {event_id!r} was already applied with other content.",
            field="event_id",
        )
    return previous
