"""The simulation engine: policies x users x rounds. Pure: no Django.

Every number comes from the numeric core (``policies.bandits``' batched forms)
and the reward table (``profiles.inference.rewards_for``): nothing here
re-implements the maths. The engine walks round by round; within a round it
encodes the candidates of every user once and each policy decides for all users
at once on (U, D, D) states. The state is the run's own (``initial_state_batch``):
live users' state is never read or written.

With a judge that knows each candidate's expected reward, every event also
carries its pick's expected reward and the best candidate's (the oracle's), so
a run measures regret without the noise of the judge's draws.

Common random numbers: the world of each user (contexts, candidates, the judge's
and the explorers' uniforms) is drawn before any policy runs
(``generator.world_draw``), so every policy faces the same work.

A hybrid (population-informed) policy refits its shared model every
``refit_every`` rounds (a policy parameter, default 1) from the rewards it has
earned in this simulation so far, over its population: the run's users in blocks
of ``POPULATION_USERS`` (users 0 to 999, 1,000 to 1,999, ...). A chunk smaller
than its block simulates the hybrid policies over the whole block and keeps its
own users' events, so a run's results do not depend on its chunk size, and a
chunk can stay small enough for the progress to move every couple of seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policies import bandits
from profiles import inference
from simulations import generator, personas
from simulations.judges import Judge

# A hybrid policy's population in a simulation: the run's users in blocks of this
# many. Its documented figures (docs/algorithms.md) are of one block of 1,000.
POPULATION_USERS = 1_000


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """What the engine needs of a policy: the registry's row, frozen at run time."""

    name: str
    algorithm: str
    dimension: int
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Events:
    """One row per (policy, user, round), ordered by that key; columns as arrays."""

    policy: np.ndarray  # index into the run's policies
    user_index: np.ndarray
    round: np.ndarray
    persona: np.ndarray  # index into personas.PERSONAS
    hour: np.ndarray
    pick: np.ndarray  # the picked candidate's position
    priority: np.ndarray  # the picked candidate's features
    is_overdue: np.ndarray
    task_age_days: np.ndarray
    kind: np.ndarray  # codes of inference.KINDS
    dwell_ms: np.ndarray
    reward: np.ndarray
    explored: np.ndarray
    # With a judge that knows expected rewards (else NaN): the picked
    # candidate's, and the best candidate's of that (user, round): the oracle.
    expected_reward: np.ndarray
    oracle_reward: np.ndarray

    def __len__(self) -> int:
        return len(self.reward)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__slots__}


_COLUMNS = (
    ("pick", np.int16),
    ("priority", np.int16),
    ("is_overdue", bool),
    ("task_age_days", np.int32),
    ("kind", np.int16),
    ("dwell_ms", np.float64),
    ("reward", np.float64),
    ("explored", bool),
    ("expected_reward", np.float64),
    ("oracle_reward", np.float64),
)


@dataclass(slots=True)
class _Population:
    """A hybrid policy's shared model within one simulation: the sums of every
    reward it earned, and the weights of its latest refit (None before one)."""

    refit_every: int
    gram: np.ndarray | None = None
    moment: np.ndarray | None = None
    weights: np.ndarray | None = None

    def learn(self, xs, rewards, *, round_done: int, spec: PolicySpec) -> None:
        gram, moment = bandits.shared_moments(xs, rewards)
        if self.gram is None:
            self.gram, self.moment = gram, moment
        else:
            self.gram += gram
            self.moment += moment
        if round_done % self.refit_every == 0:
            self.weights = bandits.shared_fit(
                self.gram,
                self.moment,
                ridge=spec.params.get("ridge", bandits.HYBRID_RIDGE),
            )


def simulate(
    *,
    policies: Sequence[PolicySpec],
    judge: Judge,
    seed: int,
    user_start: int,
    user_stop: int,
    n_rounds: int,
    n_candidates: int,
    n_users: int,
) -> Events:
    """Run ``policies`` on users [user_start, user_stop) of a run of ``n_users``
    for ``n_rounds`` rounds. (The run's size is asked for, not assumed: a
    hybrid policy's population block depends on it.)

    The result depends only on the seed, the rounds and candidates, and the run's
    size: each user's events are the same in any range, a hybrid policy's
    because it learns from the users of its population block, whichever of
    them the range holds. The same seed gives the same events to the bit.
    """
    common = dict(judge=judge, seed=seed, n_rounds=n_rounds, n_candidates=n_candidates)
    hybrid = [p for p, spec in enumerate(policies) if spec.algorithm == bandits.HYBRID]
    others = [p for p in range(len(policies)) if p not in hybrid]
    parts = []  # (events, the run's index of each of its policies)
    if others:
        specs = [policies[p] for p in others]
        events = _simulate(
            policies=specs, user_start=user_start, user_stop=user_stop, **common
        )
        parts.append((events, others))
    if hybrid:
        specs = [policies[p] for p in hybrid]
        for start, stop in _blocks(user_start, user_stop, n_users):
            events = _simulate(
                policies=specs, user_start=start, user_stop=stop, **common
            )
            parts.append((events, hybrid))
    return _merge(parts, len(policies), user_start, user_stop)


def _blocks(user_start: int, user_stop: int, n_users: int) -> list[tuple[int, int]]:
    """The population blocks of a run of ``n_users`` that [user_start, user_stop)
    overlaps."""
    first = user_start // POPULATION_USERS * POPULATION_USERS
    return [
        (start, min(start + POPULATION_USERS, n_users))
        for start in range(first, user_stop, POPULATION_USERS)
    ]


def _merge(parts, n_policies: int, user_start: int, user_stop: int) -> Events:
    """The parts' events of users [user_start, user_stop), their policies numbered
    as the run's, in the key's order (policy, user, round)."""
    pieces = []
    for index in range(n_policies):
        for events, indices in parts:  # parts of one policy come in user order
            if index in indices:
                keep = (
                    (events.policy == indices.index(index))
                    & (events.user_index >= user_start)
                    & (events.user_index < user_stop)
                )
                pieces.append((index, keep, events))
    columns = {
        name: np.concatenate(
            [getattr(events, name)[keep] for _, keep, events in pieces]
        )
        for name in Events.__slots__
    }
    columns["policy"] = np.concatenate(
        [np.full(int(keep.sum()), index) for index, keep, _ in pieces]
    )
    return Events(**columns)


def _simulate(
    *,
    policies: Sequence[PolicySpec],
    judge: Judge,
    seed: int,
    user_start: int,
    user_stop: int,
    n_rounds: int,
    n_candidates: int,
) -> Events:
    """Run ``policies`` on users [user_start, user_stop), together: a hybrid
    policy learns from all of them."""
    world = generator.world_draw(
        seed=seed,
        user_start=user_start,
        user_stop=user_stop,
        n_rounds=n_rounds,
        n_candidates=n_candidates,
        judge_uniforms=judge.uniforms,
    )
    n_users, n_policies = len(world.users), len(policies)
    dimension = max(p.dimension for p in policies)
    profile = personas.profile_arrays(world.persona)
    states = [bandits.initial_state_batch(n_users, p.dimension) for p in policies]
    population = {
        p: _Population(refit_every=int(spec.params.get("refit_every", 1)))
        for p, spec in enumerate(policies)
        if spec.algorithm == bandits.HYBRID
    }
    out = {
        name: np.empty((n_policies, n_rounds, n_users), dtype=dtype)
        for name, dtype in _COLUMNS
    }
    users = np.arange(n_users)
    expected_of = getattr(judge, "expected_reward", None)
    for r in range(n_rounds):
        # One encoding per round at the largest dimension: a smaller feature set
        # is a prefix of it (docs/features.md).
        x_full = bandits.encode_batch(
            hours=world.hour[r],
            day_of_week=world.day_of_week[r],
            is_overdue=world.is_overdue[r],
            task_age_days=world.task_age_days[r],
            priority=world.priority[r],
            profile=profile,
            dimension=dimension,
        )
        if expected_of is None:
            expected = np.full(world.priority[r].shape, np.nan)
        else:  # every candidate's, so the oracle's pick is the best of them
            expected = expected_of(
                persona=world.persona[:, None],
                hour=world.hour[r][:, None],
                is_overdue=world.is_overdue[r],
                task_age_days=world.task_age_days[r],
                priority=world.priority[r],
            )
        oracle = expected.max(axis=1)
        for p, (spec, (a, b)) in enumerate(zip(policies, states, strict=True)):
            x = x_full[..., : spec.dimension]
            choice = bandits.choose_batch(
                spec.algorithm,
                spec.params,
                a,
                b,
                x,
                explore_uniforms=world.explore_uniforms[r],
                pick_uniforms=world.pick_uniforms[r],
                shared=population[p].weights if p in population else None,
            )
            pick = choice.index
            priority = world.priority[r][users, pick]
            overdue = world.is_overdue[r][users, pick]
            age = world.task_age_days[r][users, pick]
            reactions = judge.react(
                persona=world.persona,
                hour=world.hour[r],
                is_overdue=overdue,
                task_age_days=age,
                priority=priority,
                uniforms=world.judge_uniforms[r][users, pick],
            )
            reward = inference.rewards_for(reactions.kind, reactions.dwell_ms)
            bandits.update_batch(a, b, x[users, pick], reward, in_place=True)
            if p in population:
                population[p].learn(x[users, pick], reward, round_done=r + 1, spec=spec)
            out["pick"][p, r] = pick
            out["priority"][p, r] = priority
            out["is_overdue"][p, r] = overdue
            out["task_age_days"][p, r] = age
            out["kind"][p, r] = reactions.kind
            out["dwell_ms"][p, r] = reactions.dwell_ms
            out["reward"][p, r] = reward
            out["explored"][p, r] = choice.exploring
            out["expected_reward"][p, r] = expected[users, pick]
            out["oracle_reward"][p, r] = oracle

    # (policy, round, user) -> (policy, user, round): the key's order.
    def flat(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array.transpose(0, 2, 1)).reshape(-1)

    shape = (n_policies, n_rounds, n_users)
    key = np.indices(shape)
    return Events(
        policy=flat(key[0]),
        user_index=flat(np.broadcast_to(world.users, shape)),
        round=flat(key[1]),
        persona=flat(np.broadcast_to(world.persona, shape)),
        hour=flat(np.broadcast_to(world.hour, shape)),
        **{name: flat(values) for name, values in out.items()},
    )
