"""The synthetic world: each user's contexts, candidate tasks and random draws.

Pure: no Django. Every number of user u comes from generators seeded by
``SeedSequence([seed, u])``, drawn for all rounds at once, so a user's world does
not depend on which other users share the chunk: a run over users [0, U) is the
union of runs over any split of that range. Three streams are spawned per user:

- the world: each round's context (hour, day) and candidates (overdue, age,
  priority);
- the judge's uniforms, per candidate: a policy that picks a candidate gets the
  reaction those uniforms give, so two policies picking the same candidate in the
  same (user, round) get the same reaction;
- exploration: the uniforms every epsilon-greedy policy explores with.

The judge's stream is its own so a change of judge keeps the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulations.personas import persona_of

FIRST_HOUR, LAST_HOUR = 7, 23  # tips are shown while people are awake
OVERDUE_SHARE = 0.3
MEAN_AGE_DAYS = 8.0
OVERDUE_EXTRA_DAYS = 7  # an overdue task has been around for a while
MAX_AGE_DAYS = 365
PRIORITY_SHARES = np.array([0.35, 0.3, 0.2, 0.15])  # priorities 1 to 4
_PRIORITY_EDGES = np.cumsum(PRIORITY_SHARES)[:-1]

WORLD, JUDGE, EXPLORE = range(3)


@dataclass(frozen=True, slots=True)
class World:
    """Everything random about users [start, stop), round-major: (R, U, ...)."""

    users: np.ndarray  # (U,) the users' indexes in the run
    persona: np.ndarray  # (U,) index into PERSONAS
    hour: np.ndarray  # (R, U) context hour
    day_of_week: np.ndarray  # (R, U)
    is_overdue: np.ndarray  # (R, U, N) bool
    task_age_days: np.ndarray  # (R, U, N) whole days
    priority: np.ndarray  # (R, U, N) 1-4
    judge_uniforms: np.ndarray  # (R, U, N, K)
    explore_uniforms: np.ndarray  # (R, U)
    pick_uniforms: np.ndarray  # (R, U)


def user_streams(seed: int, user: int) -> list[np.random.Generator]:
    """The world, judge and exploration generators of one user of a run."""
    return [
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, user]).spawn(3)
    ]


def world_draw(
    *,
    seed: int,
    user_start: int,
    user_stop: int,
    n_rounds: int,
    n_candidates: int,
    judge_uniforms: int,
) -> World:
    """Draw the world of users [user_start, user_stop) for every round."""
    users = np.arange(user_start, user_stop)
    n = n_candidates
    worlds, judges, explores = [], [], []
    for user in users:
        world, judge, explore = user_streams(seed, int(user))
        # One block per stream: context (2 columns), then 3 per candidate.
        worlds.append(world.random((n_rounds, 2 + 3 * n)))
        judges.append(judge.random((n_rounds, n, judge_uniforms)))
        explores.append(explore.random((n_rounds, 2)))
    # (U, R, ...) -> (R, U, ...): the engine walks round by round.
    u = np.stack(worlds, axis=1)
    uniforms = np.stack(explores, axis=1)
    overdue = u[..., 2 : 2 + n] < OVERDUE_SHARE
    # Exponential ages (most tasks are young), overdue ones a week older.
    age = np.floor(-MEAN_AGE_DAYS * np.log1p(-u[..., 2 + n : 2 + 2 * n]))
    age = np.minimum(age + OVERDUE_EXTRA_DAYS * overdue, MAX_AGE_DAYS)
    priority = 1 + np.searchsorted(_PRIORITY_EDGES, u[..., 2 + 2 * n :], side="right")
    return World(
        users=users,
        persona=persona_of(users),
        hour=FIRST_HOUR
        + np.floor(u[..., 0] * (LAST_HOUR - FIRST_HOUR + 1)).astype(int),
        day_of_week=np.floor(u[..., 1] * 7).astype(int),
        is_overdue=overdue,
        task_age_days=age.astype(int),
        priority=priority.astype(int),
        judge_uniforms=np.stack(judges, axis=1),
        explore_uniforms=uniforms[..., 0],
        pick_uniforms=uniforms[..., 1],
    )
