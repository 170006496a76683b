"""Writes: simulation runs, their chunks and events, and their summaries.

A run is split into chunks of users. ``run_chunk_execute`` simulates one chunk
and writes its events together with marking it done, in one transaction, so a
chunk is all or nothing; a chunk already done is skipped. That makes chunks safe
to run again after a crash. ``run_execute`` runs them all in this process;
``run_start`` sends one Celery task that a worker fans out into one task per
chunk (``run_chunks_send``, then ``run_chunk_work`` on the workers), and
``runs_resume_stalled`` sends again those a broker lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from oo_ml.errors import Conflict, InvalidInput, Unavailable
from oo_ml.idempotency import fingerprint
from oo_ml.llm import LlmUnavailable, llm_client, llm_config, llm_off_reason
from policies import bandits
from policies.models import Policy
from profiles import inference
from simulations import engine, llm_judge, tasks
from simulations.judges import JUDGES, Judge
from simulations.models import (
    ChunkStatus,
    JudgeAnswer,
    Run,
    RunChunk,
    RunEvent,
    RunStatus,
)
from simulations.personas import PERSONA_NAMES
from simulations.selectors import (
    REWARD_UNIT,
    judge_answers_get,
    policy_spec,
    run_get,
    run_summary_compute,
)

logger = logging.getLogger(__name__)

MAX_POLICIES = 10
MAX_USERS = 1_000_000
MAX_ROUNDS = 10_000
MAX_SEED = 2**63 - 1
DEFAULT_CHUNK_USERS = 2_000  # the most users a chunk gets when the run does not say
# A chosen chunk scores about this many candidates (users x rounds x candidates x
# policies): one to two seconds of one worker (docs/simulations.md).
CHUNK_WORK = 150_000
MAX_CHUNK_USERS = 50_000
# A chunk's world is about 10 floats per (user, round, candidate): bound its memory.
MAX_CHUNK_CELLS = 20_000_000
BULK_BATCH = 5_000  # rows per INSERT where there is no COPY
IDEMPOTENCY_KEY_MAX = 200
LLM_JUDGE = llm_judge.LlmJudge.name
LLM_JUDGE_MAX_TOKENS = 200  # a reaction is a short JSON object
CHUNK_INPUTS = {"policies", "n_users", "n_rounds", "n_candidates"}


# --- creating a run -----------------------------------------------------------


def _positive_int(name: str, value, *, maximum: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number.", field=name)
    if not minimum <= value <= maximum:
        raise InvalidInput(
            f"{name} must be between {minimum:,} and {maximum:,}, not {value:,}.",
            field=name,
        )
    return value


def _text(name: str, value: str, *, maximum: int) -> str:
    """A name that can be looked up: no NUL (the database cannot hold one: it
    would be a 500), and no longer than the column it is compared with."""
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain a NUL character.", field=name)
    if not 1 <= len(value) <= maximum:
        raise InvalidInput(
            f"{name} must be 1 to {maximum} characters, not {len(value):,}.",
            field=name,
        )
    return value


def _policy_names(names) -> list[str]:
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not all(isinstance(n, str) for n in names)
    ):
        raise InvalidInput("policies must be a list of policy names.", field="policies")
    if not 1 <= len(names) <= MAX_POLICIES:
        raise InvalidInput(
            f"A run compares 1 to {MAX_POLICIES} policies, not {len(names)}.",
            field="policies",
        )
    maximum = Policy._meta.get_field("name").max_length
    for name in names:
        _text("policies", name, maximum=maximum)
    if len(set(names)) != len(names):
        raise InvalidInput("A policy is named twice.", field="policies")
    return list(names)


def _policy_specs(names: list[str]) -> list[dict]:
    found = {p.name: p for p in Policy.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise InvalidInput(
            f"No policy named {', '.join(map(repr, missing))}.", field="policies"
        )
    return [policy_spec(found[n]) for n in names]


def _hybrid_block_fits(specs: list[dict], values: dict) -> None:
    """A chunk simulates a hybrid policy over the whole population block of its
    users (``simulations.engine``), however few they are: that block, not the
    chunk, must fit one worker (``MAX_CHUNK_CELLS``)."""
    if not any(spec["algorithm"] == bandits.HYBRID for spec in specs):
        return
    n_rounds, n_candidates = values["n_rounds"], values["n_candidates"]
    block = min(engine.POPULATION_USERS, values["n_users"])
    if block * n_rounds * n_candidates > MAX_CHUNK_CELLS:
        raise InvalidInput(
            f"A hybrid policy learns from blocks of {block:,} users, each "
            f"simulated whole by every chunk that holds one of them: {block:,} "
            f"users x {n_rounds:,} rounds x {n_candidates} candidates is too large "
            f"for one worker (at most {MAX_CHUNK_CELLS:,} in all): use fewer "
            "rounds or candidates.",
            field="n_rounds",
        )


def judge_names() -> tuple[str, ...]:
    """Every judge a run may name: the pure ones, then the llm judge."""
    return (*sorted(JUDGES), LLM_JUDGE)


def judge_off_reason(name: str) -> str | None:
    """Why the judge ``name`` cannot be used now, or None: the llm judge
    needs an LLM."""
    return llm_off_reason() if name == LLM_JUDGE else None


def _judge_model(judge) -> str:
    """Check the judge's name; the model the llm judge will ask, else ""."""
    names = judge_names()
    if not isinstance(judge, str) or judge not in names:
        raise InvalidInput(
            f"No judge named {judge!r}: one of {', '.join(names)}.",
            field="judge",
        )
    if judge != LLM_JUDGE:
        return ""
    config = llm_config()
    if config is None:
        raise InvalidInput(
            f"The llm judge is off. {judge_off_reason(judge)}", field="judge"
        )
    return config.model


def chunk_users_for(
    *, n_users: int, n_rounds: int, n_candidates: int, n_policies: int
) -> int:
    """Users per chunk when the run does not say: a chunk of about
    ``CHUNK_WORK`` candidate scorings, a second or two of one worker, so that a
    run's progress moves every couple of seconds; never more than
    ``DEFAULT_CHUNK_USERS``, nor so few that the run needs more chunks than a
    run may have.

    The size is a function of the run's parameters alone, so the same
    parameters give the same chunks; the results do not depend on it (a hybrid
    policy learns from its population block whatever the chunk,
    simulations.engine).
    """
    per_user = n_rounds * n_candidates * n_policies
    by_work = max(1, CHUNK_WORK // per_user)
    fewest = math.ceil(n_users / settings.SIMULATION_MAX_CHUNKS)
    return min(max(min(by_work, DEFAULT_CHUNK_USERS), fewest), n_users)


def _judge(judge) -> str:
    _judge_model(judge)  # a judge that exists, and the llm judge only when on
    return judge


def _chunk_size(values: dict, chunk_users: int | None) -> int:
    n_users, n_rounds = values["n_users"], values["n_rounds"]
    n_candidates = values["n_candidates"]
    if chunk_users is None:  # chosen, then held to the same limits
        chunk_users = chunk_users_for(
            n_users=n_users,
            n_rounds=n_rounds,
            n_candidates=n_candidates,
            n_policies=len(values["policies"]),
        )
    chunk_users = _positive_int("chunk_users", chunk_users, maximum=MAX_CHUNK_USERS)
    chunk_users = min(chunk_users, n_users)
    if chunk_users * n_rounds * n_candidates > MAX_CHUNK_CELLS:
        raise InvalidInput(
            f"A chunk of {chunk_users:,} users x {n_rounds:,} rounds x "
            f"{n_candidates} candidates is too large for one worker: use fewer "
            f"users per chunk (at most {MAX_CHUNK_CELLS:,} in all).",
            field="chunk_users",
        )
    chunks = math.ceil(n_users / chunk_users)
    max_chunks = settings.SIMULATION_MAX_CHUNKS
    if chunks > max_chunks:
        raise InvalidInput(
            f"{n_users:,} users in chunks of {chunk_users:,} is {chunks:,} chunks; "
            f"a run has at most {max_chunks:,}: use at least "
            f"{math.ceil(n_users / max_chunks):,} users per chunk.",
            field="chunk_users",
        )
    return chunk_users


def run_parameters(arguments: Mapping) -> tuple[dict, list[InvalidInput]]:
    """A run's parameters (``run_create``'s names) checked each on its own,
    before any query: the values that passed, and every problem found (the
    API answers the first, the admin's form shows them all). A parameter left
    out is not checked; the chunk size is checked, or chosen when it is left
    out, once the sizes it depends on are good."""
    checks = {
        "policies": _policy_names,
        "judge": _judge,
        "n_users": lambda v: _positive_int("n_users", v, maximum=MAX_USERS),
        "n_rounds": lambda v: _positive_int("n_rounds", v, maximum=MAX_ROUNDS),
        "n_candidates": lambda v: _positive_int(
            "n_candidates", v, maximum=settings.MAX_CANDIDATES
        ),
        "seed": lambda v: _positive_int("seed", v, minimum=0, maximum=MAX_SEED),
    }
    values: dict = {}
    problems: list[InvalidInput] = []
    for name, check in checks.items():
        if name not in arguments:
            continue
        try:
            values[name] = check(arguments[name])
        except InvalidInput as problem:
            problems.append(problem)
    if values.keys() >= CHUNK_INPUTS:
        try:
            values["chunk_users"] = _chunk_size(values, arguments.get("chunk_users"))
        except InvalidInput as problem:
            problems.append(problem)
    return values, problems


@transaction.atomic
def run_create(
    *,
    policies: Sequence[str],
    judge: str,
    n_users: int,
    n_rounds: int,
    seed: int,
    actor: AbstractBaseUser | None,
    actor_name: str | None = None,
    n_candidates: int = 5,
    chunk_users: int | None = None,
    idempotency_key: str = "",
    idempotency_fingerprint: str = "",
) -> Run:
    """Validate and record a run and its chunks, queued. Nothing runs yet.

    Every value is checked before any query (``run_parameters``; the first
    problem is raised). Without ``chunk_users`` the chunk size is chosen from
    the run's size (``chunk_users_for``). The policies' algorithm, dimension
    and parameters are copied into the run, so it replays what the registry
    said when it was created. ``actor_name`` names who started it when there
    is no account (a command line). ``idempotency_key`` is stored with the run
    (unique per account) with the digest of the request that made it.
    """
    values, problems = run_parameters(
        {
            "policies": policies,
            "judge": judge,
            "n_users": n_users,
            "n_rounds": n_rounds,
            "seed": seed,
            "n_candidates": n_candidates,
            "chunk_users": chunk_users,
        }
    )
    if problems:
        raise problems[0]
    policies, n_users = values["policies"], values["n_users"]
    judge_model = _judge_model(judge)
    specs = _policy_specs(policies)
    _hybrid_block_fits(specs, values)
    chunk_users = values["chunk_users"]
    chunks = math.ceil(n_users / chunk_users)
    if actor is not None and actor.pk:
        name = actor.get_username()
    else:
        actor, name = None, actor_name or "system"
    run = Run.objects.create(
        policies=list(policies),
        policy_specs=specs,
        judge=judge,
        judge_model=judge_model,
        judge_prompt_version=llm_judge.PROMPT_VERSION if judge_model else "",
        n_users=n_users,
        n_rounds=n_rounds,
        n_candidates=n_candidates,
        seed=seed,
        chunk_users=chunk_users,
        created_by=actor,
        created_by_name=name,
        chunks_total=chunks,
        idempotency_key=idempotency_key,
        idempotency_fingerprint=idempotency_fingerprint,
    )
    RunChunk.objects.bulk_create(
        RunChunk(
            run=run,
            index=i,
            user_start=i * chunk_users,
            user_stop=min((i + 1) * chunk_users, n_users),
        )
        for i in range(chunks)
    )
    return run


# --- writing events -----------------------------------------------------------

_EVENT_COLUMNS = (
    "run_id",
    "policy",
    "user_index",
    "round",
    "persona",
    "hour",
    "pick",
    "priority",
    "is_overdue",
    "task_age_days",
    "kind",
    "dwell_ms",
    "reward",
    "explored",
    "expected_units",
    "oracle_units",
)


def _event_columns(
    *, run_id: uuid.UUID, policy_names: Sequence[str], events: engine.Events
) -> list[list]:
    """The events as Python lists, one per column of ``_EVENT_COLUMNS``."""
    names = np.array(policy_names, dtype=object)
    personas = np.array(PERSONA_NAMES, dtype=object)
    kinds = np.array(inference.KINDS, dtype=object)
    dwell = events.dwell_ms.astype(object)
    dwell[np.isnan(events.dwell_ms)] = None

    def units_or_none(values: np.ndarray) -> list:
        """Expected rewards in whole millionths; None for a judge without them."""
        if np.isnan(values).all():
            return [None] * len(values)
        return np.rint(values * REWARD_UNIT).astype(np.int64).tolist()

    return [
        [run_id] * len(events),
        names[events.policy].tolist(),
        events.user_index.tolist(),
        events.round.tolist(),
        personas[events.persona].tolist(),
        events.hour.tolist(),
        events.pick.tolist(),
        events.priority.tolist(),
        events.is_overdue.tolist(),
        events.task_age_days.tolist(),
        kinds[events.kind].tolist(),
        [None if d is None else int(d) for d in dwell.tolist()],
        events.reward.tolist(),
        events.explored.tolist(),
        units_or_none(events.expected_reward),
        units_or_none(events.oracle_reward),
    ]


def events_write(
    *,
    run_id: uuid.UUID,
    policy_names: Sequence[str],
    events: engine.Events,
    method: str | None = None,
) -> int:
    """Append a chunk's events: COPY on PostgreSQL, large INSERTs elsewhere.

    Call it inside the chunk's transaction. Answers the number of rows written.
    ``method`` ("copy" or "insert") overrides the choice, for tests.
    """
    if not len(events):
        return 0
    columns = _event_columns(run_id=run_id, policy_names=policy_names, events=events)
    table = RunEvent._meta.db_table
    method = method or ("copy" if connection.vendor == "postgresql" else "insert")
    if method == "copy":
        sql = f"COPY {table} ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
        # psycopg's own cursor has COPY; Django's wraps it.
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    else:
        # One prepared INSERT run over the rows, without a model instance per
        # row: on SQLite (make run) about five times bulk_create's rate, which
        # is most of a chunk's time there.
        columns[0] = [_run_id_for_db(run_id)] * len(events)
        sql = (
            f"INSERT INTO {table} ({', '.join(_EVENT_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(_EVENT_COLUMNS))})"
        )
        rows = list(zip(*columns, strict=True))
        with connection.cursor() as cursor:
            for start in range(0, len(rows), BULK_BATCH):
                cursor.executemany(sql, rows[start : start + BULK_BATCH])
    return len(events)


def _run_id_for_db(run_id: uuid.UUID):
    """The run's id as its column holds it (a UUID, or hex text on SQLite)."""
    return RunEvent._meta.get_field("run").get_db_prep_value(run_id, connection)


# --- the llm judge -------------------------------------------------------------


def judge_answers_put(
    *, asked: Sequence[llm_judge.Asked], model: str, prompt_version: str
) -> dict[str, str]:
    """Keep the llm judge's answers; a key kept already (another worker asked
    the same prompt at the same time) keeps its first answer, which is what
    every key answers, so all workers go on with the same reactions."""
    JudgeAnswer.objects.bulk_create(
        [
            JudgeAnswer(
                key=a.key,
                model=model,
                prompt_version=prompt_version,
                messages=a.messages,
                answer=a.answer,
            )
            for a in asked
        ],
        ignore_conflicts=True,
    )
    return judge_answers_get(keys=[a.key for a in asked])


@dataclass(frozen=True, slots=True)
class JudgeAnswerCache:
    """The llm judge's ``AnswerCache``: the ``JudgeAnswer`` table."""

    model: str
    prompt_version: str

    def get_many(self, keys) -> dict[str, str]:
        return judge_answers_get(keys=keys)

    def put_many(self, asked) -> dict[str, str]:
        return judge_answers_put(
            asked=asked, model=self.model, prompt_version=self.prompt_version
        )


@contextlib.contextmanager
def _judge_open(run: Run) -> Iterator[Judge]:
    """The run's judge for one chunk: for the llm judge, a fresh one (its
    counts are the chunk's) asking the run's model through one client."""
    if run.judge != LLM_JUDGE:
        yield JUDGES[run.judge]
        return
    if run.judge_prompt_version != llm_judge.PROMPT_VERSION:
        raise Conflict(
            f"Run {run.id} asks with the judge prompt {run.judge_prompt_version}; "
            f"this code has {llm_judge.PROMPT_VERSION}.",
            field="judge",
        )

    with llm_client() as client:

        def ask(messages: list[dict[str, str]]) -> str | None:
            try:
                return client.complete(
                    messages,
                    model=run.judge_model,
                    json_object=True,
                    max_tokens=LLM_JUDGE_MAX_TOKENS,
                ).text
            except LlmUnavailable as error:
                logger.warning("run %s: the llm judge falls back: %s", run.id, error)
                return None

        yield llm_judge.LlmJudge(
            ask=ask,
            cache=JudgeAnswerCache(
                model=run.judge_model, prompt_version=run.judge_prompt_version
            ),
            model=run.judge_model,
            concurrency=settings.LLM_CONCURRENCY,
        )


# --- running it ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkResult:
    index: int
    executed: bool  # False: it was done already (or the run is over)
    events: int
    engine_seconds: float
    storage_seconds: float


def _specs(run: Run) -> list[engine.PolicySpec]:
    return [engine.PolicySpec(**spec) for spec in run.policy_specs]


def _skipped(index: int) -> ChunkResult:
    return ChunkResult(index, False, 0, 0.0, 0.0)


def run_chunk_execute(*, run_id: uuid.UUID, chunk_index: int) -> ChunkResult:
    """Simulate one chunk and store its events, or skip it if it is done.

    The events and the chunk's "done" commit together: a crash before the
    commit leaves no event, so running the chunk again writes it whole, and a
    second execution (a redelivered task, two workers) finds it done under the
    chunk's row lock and writes nothing. The simulation itself runs outside the
    transaction: it holds no lock while it computes.
    """
    run = run_get(run_id=run_id)
    if run.status in (RunStatus.FINISHED, RunStatus.FAILED):
        return _skipped(chunk_index)
    chunk = RunChunk.objects.filter(run=run, index=chunk_index).first()
    if chunk is None:
        raise InvalidInput(
            f"Run {run.id} has chunks 0 to {run.chunks_total - 1}, not {chunk_index}.",
            field="chunk_index",
        )
    if chunk.status == ChunkStatus.DONE:
        return _skipped(chunk_index)
    Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )

    started = time.perf_counter()
    with _judge_open(run) as judge:
        events = engine.simulate(
            policies=_specs(run),
            judge=judge,
            seed=run.seed,
            user_start=chunk.user_start,
            user_stop=chunk.user_stop,
            n_rounds=run.n_rounds,
            n_candidates=run.n_candidates,
            n_users=run.n_users,
        )
    stats = getattr(judge, "stats", None)
    simulated = time.perf_counter()
    with transaction.atomic():
        chunk = RunChunk.objects.select_for_update().get(pk=chunk.pk)
        if chunk.status == ChunkStatus.DONE:
            return _skipped(chunk_index)
        written = events_write(run_id=run.id, policy_names=run.policies, events=events)
        chunk.status = ChunkStatus.DONE
        chunk.events = written
        chunk.engine_seconds = simulated - started
        chunk.finished_at = timezone.now()
        chunk.storage_seconds = time.perf_counter() - simulated
        chunk.judge_stats = None if stats is None else stats.as_dict()
        chunk.save(
            update_fields=[
                "status",
                "events",
                "engine_seconds",
                "storage_seconds",
                "finished_at",
                "judge_stats",
            ]
        )
        Run.objects.filter(pk=run.pk).update(
            chunks_done=F("chunks_done") + 1,
            engine_seconds=F("engine_seconds") + chunk.engine_seconds,
            storage_seconds=F("storage_seconds") + chunk.storage_seconds,
            updated_at=timezone.now(),
        )
    # The commit is where PostgreSQL finishes taking the COPY in (about half of
    # the storage time): add it to the timings once it is done.
    committing = time.perf_counter() - simulated - chunk.storage_seconds
    storage = chunk.storage_seconds + committing
    RunChunk.objects.filter(pk=chunk.pk).update(storage_seconds=storage)
    Run.objects.filter(pk=run.pk).update(
        storage_seconds=F("storage_seconds") + committing
    )
    return ChunkResult(chunk_index, True, written, chunk.engine_seconds, storage)


def run_fail(*, run_id: uuid.UUID, reason: str) -> bool:
    """Mark a run that has not ended failed, saying why. False if it had ended."""
    return bool(
        Run.objects.filter(
            pk=run_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).update(
            status=RunStatus.FAILED,
            error=reason,
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
    )


def run_finish(*, run_id: uuid.UUID) -> Run:
    """Write the summary of a run whose chunks are all done, and finish it.

    Finishing a finished run changes nothing. A run with chunks still to do is
    a Conflict.
    """
    run = run_get(run_id=run_id)
    if run.status == RunStatus.FINISHED:
        return run
    if run.status == RunStatus.FAILED:
        raise Conflict(f"Run {run.id} failed: {run.error}", field="id")
    if run.chunks_done < run.chunks_total:
        raise Conflict(
            f"Run {run.id} has {run.chunks_done} of {run.chunks_total} chunks done.",
            field="id",
        )
    started = time.perf_counter()
    summary = run_summary_compute(run=run)
    Run.objects.filter(
        pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).update(
        status=RunStatus.FINISHED,
        summary=summary,
        summary_seconds=time.perf_counter() - started,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    return run_get(run_id=run.pk)


def _chunk_tasks_send(chunks: Sequence[tuple[uuid.UUID, int]]) -> None:
    for run_id, index in chunks:
        tasks.run_chunk.delay(str(run_id), index)


def _chunks_send(chunks: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Send one task per (run id, chunk index) once the transaction commits, so a
    worker never looks for a run, or a sending time, that is not there yet."""
    transaction.on_commit(lambda: _chunk_tasks_send(chunks))


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


def _fan_out_send(run_id: uuid.UUID) -> None:
    """Hand the run's fan-out task to the broker. If the broker cannot take it,
    the run, which nothing has started, is deleted, so the caller's retry (with
    the same Idempotency-Key, say) starts it afresh, and the caller hears 503."""
    try:
        tasks.run_fan_out.delay(str(run_id))
    except Exception as error:  # any failure to send: nothing was started
        logger.warning("simulation run %s: the broker refused it", run_id, exc_info=1)
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).delete()
        raise BrokerUnavailable(
            "The task broker cannot take the run now, so nothing was started: "
            "retry shortly."
        ) from error


@transaction.atomic
def run_start(*, run_id: uuid.UUID) -> Run:
    """Hand a queued run to the Celery workers: one task, sent once the caller's
    transaction commits, that a worker fans out into one task per chunk not done
    (``run_chunks_send``). A start costs one message whatever the run's size.

    Each chunk records when its task was sent (``sent_at``), which is what
    ``runs_resume_stalled`` goes by: set here already, so a fan-out task the
    broker loses is covered by the sweep as a lost chunk task is.
    """
    run = run_get(run_id=run_id)
    if run.status != RunStatus.QUEUED:
        raise Conflict(f"Run {run.id} is {run.status}, not queued.", field="id")
    run.chunks.filter(status=ChunkStatus.PENDING).update(sent_at=timezone.now())
    transaction.on_commit(lambda: _fan_out_send(run.id))
    return run


def run_chunks_send(*, run_id: uuid.UUID | str) -> int:
    """A worker's fan-out: send one task per chunk of the run still pending, now;
    answers how many. A run that ended sends nothing; a second fan-out (a
    redelivered task) sends the pending chunks again, which their idempotence
    makes harmless."""
    run = run_get(run_id=run_id)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return 0
    pending = run.chunks.filter(status=ChunkStatus.PENDING)
    indexes = list(pending.values_list("index", flat=True))
    pending.update(sent_at=timezone.now())
    _chunk_tasks_send([(run.id, index) for index in indexes])
    return len(indexes)


def _idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = _text("Idempotency-Key", key, maximum=IDEMPOTENCY_KEY_MAX)
    if not key.isprintable() or not key.isascii():
        raise InvalidInput(
            "Idempotency-Key must be printable ASCII.", field="Idempotency-Key"
        )
    return key


def run_launch(
    *, actor: AbstractBaseUser, idempotency_key: str | None = None, **arguments
) -> tuple[Run, bool]:
    """Create a run and hand it to the workers, as the API and the admin start
    one; answers (the run, whether it was created now).

    With ``idempotency_key``, a retry of the same request by the same account
    answers the run the first made (created False), and the key used for a
    different request is a Conflict. If the broker cannot take the run, nothing
    is kept and it raises ``BrokerUnavailable``.
    """
    key = _idempotency_key(idempotency_key)
    digest = fingerprint(**arguments) if key else ""
    if key:
        previous = _run_for_key(actor=actor, key=key, digest=digest)
        if previous is not None:
            return previous, False
    try:
        with transaction.atomic():
            run = run_create(
                **arguments,
                actor=actor,
                idempotency_key=key or "",
                idempotency_fingerprint=digest,
            )
            run = run_start(run_id=run.id)
    except IntegrityError:  # the same key, at the same moment, from a retry
        previous = _run_for_key(actor=actor, key=key, digest=digest) if key else None
        if previous is None:
            raise
        return previous, False
    return run, True


def _run_for_key(*, actor: AbstractBaseUser, key: str, digest: str) -> Run | None:
    previous = Run.objects.filter(created_by=actor, idempotency_key=key).first()
    if previous is not None and previous.idempotency_fingerprint != digest:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for another run.",
            field="Idempotency-Key",
        )
    return previous


@transaction.atomic
def runs_resume_stalled(
    *, stalled_seconds: float | None = None
) -> list[tuple[uuid.UUID, int]]:
    """Send again the tasks that the workers seem to have lost; answers the
    (run id, chunk index) of each task sent.

    A broker that deletes a message when a worker reads it (the embedded
    filesystem broker) loses the chunk of a worker killed mid-chunk; RabbitMQ
    and Redis deliver it again. A chunk is taken for lost when it is still
    pending, its task was sent over ``stalled_seconds`` ago (default: a chunk's
    time limit, the longest a worker may hold it) and its run, queued or
    running, has not completed a chunk for as long (``Run.updated_at`` moves
    only then). A chunk that was merely waiting behind other runs' is sent
    twice, which its idempotence makes harmless; each resend restarts the wait,
    so a chunk is sent at most once per ``stalled_seconds``. Chunks never sent
    (runsim in process) are left alone.
    """
    if stalled_seconds is None:
        stalled_seconds = settings.SIMULATION_CHUNK_TIME_LIMIT
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=stalled_seconds)
    stalled = (
        RunChunk.objects.filter(
            status=ChunkStatus.PENDING,
            sent_at__lt=cutoff,
            run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
            run__updated_at__lt=cutoff,
        )
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("run_id", "index")
    )
    # Locked: two sweeps at once, or a chunk committing now, are skipped.
    chunks = list(stalled.values_list("pk", "run_id", "index"))
    if not chunks:
        return []
    RunChunk.objects.filter(pk__in=[pk for pk, *_ in chunks]).update(sent_at=now)
    resent = [(run_id, index) for _, run_id, index in chunks]
    for run_id in dict.fromkeys(run_id for run_id, _ in resent):
        logger.warning(
            "simulation run %s: no progress for %d s, sending chunks %s again",
            run_id,
            stalled_seconds,
            [index for r, index in resent if r == run_id],
        )
    _chunks_send(resent)
    return resent


def run_chunk_work(*, run_id: uuid.UUID | str, chunk_index: int) -> None:
    """A worker's share of a run: one chunk, then the summary if it was the last.

    A chunk that raises fails the run with the reason (and the error goes on to
    the worker's log); the run's other chunks then skip.
    """
    try:
        run_chunk_execute(run_id=run_id, chunk_index=chunk_index)
    except Exception as error:
        run_fail(run_id=run_id, reason=_failure(chunk_index, error))
        raise
    run = run_get(run_id=run_id)
    if run.status == RunStatus.RUNNING and run.chunks_done == run.chunks_total:
        run_finish(run_id=run_id)


def _failure(chunk_index: int, error: Exception) -> str:
    return f"chunk {chunk_index}: {type(error).__name__}: {error}"


def run_execute(
    *,
    run_id: uuid.UUID,
    on_progress: Callable[[int, int], None] | None = None,
) -> Run:
    """Run every chunk not done yet, in order, in this process, then finish.

    A chunk that raises fails the run with the reason; the chunks done before
    stay done. ``on_progress(done, total)`` is called as each chunk completes.
    """
    run = run_get(run_id=run_id)
    pending = list(run.chunks.filter(status=ChunkStatus.PENDING).order_by("index"))
    done = run.chunks_total - len(pending)
    if on_progress:
        on_progress(done, run.chunks_total)
    for chunk in pending:
        try:
            run_chunk_execute(run_id=run.pk, chunk_index=chunk.index)
        except Exception as error:
            logger.exception("simulation run %s failed in chunk %s", run.pk, chunk)
            run_fail(
                run_id=run.pk,
                reason=(
                    f"chunk {chunk.index} (users {chunk.user_start}-"
                    f"{chunk.user_stop - 1}): {type(error).__name__}: {error}"
                ),
            )
            return run_get(run_id=run.pk)
        done += 1
        if on_progress:
            on_progress(done, run.chunks_total)
    return run_finish(run_id=run.pk)
