"""The five user-profile features (docs/features.md): their registry and their maths.

Pure: no Django. ``FEATURES`` is the one list of them, read by the models' admin
page, the API's validation and documentation, and the computation below. The
database side (``profiles.selectors``) only counts events; every value is
computed here from those counts, so the one-user and the bulk paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_DAYS = 30
HOURS = 24
# preferred_hour stays null until the user has done this many tips.
PREFERRED_HOUR_MIN_DONE = 3


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: type  # int or float
    minimum: float | None  # None: unbounded
    maximum: float | None
    description: str

    @property
    def range_text(self) -> str:
        low = "−∞" if self.minimum is None else f"{self.minimum:g}"
        high = "∞" if self.maximum is None else f"{self.maximum:g}"
        return f"{low}–{high}"


FEATURES = (
    Feature(
        "completion_rate_30d",
        float,
        0,
        1,
        "done ÷ served over the last 30 days (at most 1); null with nothing served.",
    ),
    Feature(
        "dismiss_rate_30d",
        float,
        0,
        1,
        "dismissed ÷ served over the last 30 days (at most 1); null with "
        "nothing served.",
    ),
    Feature(
        "mean_dwell_ms_30d",
        float,
        0,
        None,
        "Mean dwell (ms) of the done events that carry one, last 30 days; "
        "null if none does.",
    ),
    Feature(
        "preferred_hour",
        int,
        0,
        HOURS - 1,
        "The hour (0–23) with the most done events in the last 30 days, ties to "
        f"the earliest; null under {PREFERRED_HOUR_MIN_DONE} done events.",
    ),
    Feature(
        "tip_volume_30d",
        int,
        0,
        None,
        "How many tips were served in the last 30 days.",
    ),
)
NAMES = tuple(f.name for f in FEATURES)


@dataclass(frozen=True, slots=True)
class EventCounts:
    """What the database counts for one user over the window."""

    served: int = 0
    viewed: int = 0
    done: int = 0
    dismissed: int = 0
    snoozed: int = 0
    done_dwell_sum: int = 0  # ms, over done events with a dwell
    done_dwell_count: int = 0
    done_by_hour: tuple[int, ...] = field(default=(0,) * HOURS)


def preferred_hour(done_by_hour: tuple[int, ...]) -> int | None:
    """The hour with most done events, ties to the earliest; null under the minimum."""
    if sum(done_by_hour) < PREFERRED_HOUR_MIN_DONE:
        return None
    best = max(done_by_hour)
    return done_by_hour.index(best)  # index() finds the earliest of the ties


def _rate(count: int, served: int) -> float | None:
    """count ÷ served, capped at 1: a reaction whose served event was never sent
    must not push a rate outside the range the policies were built for."""
    return min(count / served, 1.0) if served else None


def compute(counts: EventCounts) -> dict[str, float | int | None]:
    """The five features from one user's counts, as docs/features.md defines them."""
    served = counts.served
    return {
        "completion_rate_30d": _rate(counts.done, served),
        "dismiss_rate_30d": _rate(counts.dismissed, served),
        "mean_dwell_ms_30d": (
            counts.done_dwell_sum / counts.done_dwell_count
            if counts.done_dwell_count
            else None
        ),
        "preferred_hour": preferred_hour(counts.done_by_hour),
        "tip_volume_30d": served,
    }
