"""The five synthetic users of the simulations (docs/simulations.md). Pure: no Django.

Each persona has the five profile features a real user would have (what a D=12
policy reads) and the preferences the rule judge reacts with. The preferences
are chosen so the policies differ: which tasks a persona completes depends on
the task (priority, overdue, age) and on the time of day, and only some of that
is visible to each feature set.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from policies import bandits


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    description: str
    # Synthetic profile features: the names are exactly bandits.PROFILE_NAMES.
    completion_rate_30d: float | None
    dismiss_rate_30d: float | None
    mean_dwell_ms_30d: float | None
    preferred_hour: int | None
    tip_volume_30d: int | None
    # Preferences: a logit of completing the tip, from these weights on
    # 1, is_overdue, (priority - 1) / 3, priority <= 2, min(age / 30, 1),
    # morning (6-11 h) and evening (18-23 h).
    base: float = 0.0
    overdue: float = 0.0
    priority: float = 0.0
    low_priority: float = 0.0
    age: float = 0.0
    morning: float = 0.0
    evening: float = 0.0
    # Of the tips not completed, the share dismissed (the rest are snoozed).
    dismiss_share: float = 0.5
    # Typical time to complete a tip that suits them, in seconds.
    dwell_s: float = 60.0

    @property
    def profile(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in bandits.PROFILE_NAMES}


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "deadline-driven",
        "Does what is overdue or important first, in the morning by choice.",
        completion_rate_30d=0.55,
        dismiss_rate_30d=0.2,
        mean_dwell_ms_30d=75_000,
        preferred_hour=9,
        tip_volume_30d=60,
        base=-1.5,
        overdue=2.0,
        priority=2.5,
        age=0.5,
        morning=0.5,
        evening=-0.5,
        dismiss_share=0.5,
        dwell_s=60,
    ),
    Persona(
        "evening-relaxed",
        "Completes easy, older tasks in the evening; dismisses morning tips.",
        completion_rate_30d=0.35,
        dismiss_rate_30d=0.4,
        mean_dwell_ms_30d=150_000,
        preferred_hour=20,
        tip_volume_30d=40,
        base=-0.5,
        priority=-1.0,
        age=1.0,
        morning=-3.0,
        evening=2.0,
        dismiss_share=0.8,
        dwell_s=90,
    ),
    Persona(
        "low-priority-first",
        "Clears the small things (priority 1-2) and leaves the big ones.",
        completion_rate_30d=0.45,
        dismiss_rate_30d=0.3,
        mean_dwell_ms_30d=45_000,
        preferred_hour=16,
        tip_volume_30d=50,
        base=-1.0,
        overdue=-0.5,
        priority=-1.0,
        low_priority=2.5,
        dismiss_share=0.6,
        dwell_s=45,
    ),
    Persona(
        "consistent-responder",
        "Completes most tips whatever they are, taking a few minutes.",
        completion_rate_30d=0.8,
        dismiss_rate_30d=0.05,
        mean_dwell_ms_30d=240_000,
        preferred_hour=None,  # no hour stands out
        tip_volume_30d=80,
        base=2.0,
        priority=0.5,
        dismiss_share=0.3,
        dwell_s=240,
    ),
    Persona(
        "overdue-ignorer",
        "Dismisses anything overdue; likes fresh tasks.",
        completion_rate_30d=0.5,
        dismiss_rate_30d=0.35,
        mean_dwell_ms_30d=60_000,
        preferred_hour=11,
        tip_volume_30d=30,
        base=0.8,
        overdue=-3.5,
        age=-1.5,
        dismiss_share=0.9,
        dwell_s=60,
    ),
)
PERSONA_NAMES = tuple(p.name for p in PERSONAS)
WEIGHTS = ("base", "overdue", "priority", "low_priority", "age", "morning", "evening")


def persona_of(users: np.ndarray) -> np.ndarray:
    """Personas are assigned round-robin: user u is u mod 5."""
    return np.asarray(users) % len(PERSONAS)


def profile_arrays(persona: np.ndarray) -> dict[str, np.ndarray]:
    """Each user's profile features by name, NaN for a null: what encode_batch
    reads for a D=12 policy."""
    return {name: column(name)[persona] for name in bandits.PROFILE_NAMES}


def column(name: str) -> np.ndarray:
    """One field of every persona, in PERSONAS order, for vectorised lookups."""
    if name not in {f.name for f in fields(Persona)}:
        raise KeyError(name)
    return np.array([getattr(p, name) for p in PERSONAS], dtype=float)
