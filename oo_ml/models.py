"""Abstract bases shared by every app's models."""

import os
import time
import uuid

from django.db import models
from django.utils import timezone


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): log rows insert at the index's end."""
    millis = time.time_ns() // 1_000_000
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
