"""Numbers and times as the admin writes them for people."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from django.utils import timezone
from django.utils.timesince import timesince

DIGITS = 4


def significant(value: float | None, digits: int = DIGITS) -> str:
    """A score or a propensity to ``digits`` significant digits: 0.9500000000000001
    is 0.95, -0.49729781959 is -0.4973, 2.9123e-05 is 0.00002912; large values
    keep every whole digit."""
    if value is None:
        return "—"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    # Positional, never 2.9e-05: 0.000029.
    return np.format_float_positional(
        value, precision=digits, unique=False, fractional=False, trim="-"
    )


def total(value: float) -> str:
    """A sum of rewards to four decimals at most: 1.7000000000000006 is 1.7,
    -5.500000000000002 is -5.5 (rewards are given to three)."""
    return np.format_float_positional(round(value, DIGITS), trim="-")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "just now" under a minute, else "3 minutes ago", "2 days, 4 hours ago"."""
    if moment is None:
        return "—"
    now = now or timezone.now()
    if (now - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment, now)} ago"


SHORT_ID = 8


def short_id(value) -> str:
    """An id's last 8 characters: a time-ordered UUID's first ones are the same
    for every row written in the same second, its last ones are random."""
    text = str(value)
    return text if len(text) <= SHORT_ID + 1 else f"…{text[-SHORT_ID:]}"
