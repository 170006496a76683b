"""Abstract bases shared by every app's models, and the API's tokens."""

import os
import time
import uuid
from datetime import datetime

from django.conf import settings
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


class ApiToken(CreatedModel):
    """A token for the API, kept only as the SHA-256 digest of its value.

    The value is shown once, when the token is made (``manage.py service_token``
    or the admin's "add"), and is nowhere in the database: a leaked database or
    backup opens nothing. A token is 256 random bits, so one unsalted digest is
    as strong as a slow password hash and costs a microsecond per lookup.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(
        max_length=100, blank=True, help_text="What the token is for."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        return f"token {self.pk} of {self.user}{label}"
