"""Abstract bases shared by every app's models."""

import os
import time
import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): log rows insert at the index's end.

    ``at`` gives the time it carries (the logs are partitioned by it): the rows
    of one request share one millisecond, so they share one day's partition.
    """
    millis = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1e3)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant
    return uuid.UUID(int=value)


class CreatedModel(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True


class TimeStampedModel(CreatedModel):
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
