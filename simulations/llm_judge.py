"""The ``llm`` judge: a language model plays the persona. No Django here.

For each user it asks the model how the persona reacts to the picked candidate at
that hour: the persona's description and profile, the task's priority, whether
it is overdue and how old it is (in bands, so that fewer distinct prompts cover
the world), and the hour. The answer must be one JSON object,
``{"reaction": "done" | "dismissed" | "snoozed", "dwell_ms": whole ms}``; anything
else, or no answer at all, falls back to what the ``rule`` judge draws for that
same (user, round) from the same uniforms, and is counted.

Answers are kept by a digest of the model, the prompt's version and the
messages (``AnswerCache``: a database table in the app), so a rerun reads them
instead of asking: with the same seed it gets the same reactions, fallbacks
included, and costs no call. An answer that could not be had (the model down,
too slow) is not kept: a rerun asks again. The prompt asks for temperature 0,
but only the cache makes a rerun exact.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from simulations import personas
from simulations.judges import DISMISSED, DONE, SNOOZED, Reactions, RuleJudge

PROMPT_VERSION = "judge-v1"
MAX_DWELL_MS = 3_600_000  # an hour on one tip is the most an answer may say
# After this many answers the model could not give, a chunk stops asking: every
# ask costs up to the client's timeout times its attempts.
UNAVAILABLE_LIMIT = 8
REACTIONS = {"done": DONE, "dismissed": DISMISSED, "snoozed": SNOOZED}
AGE_BANDS = (  # (up to this many days, how the prompt says it)
    (0, "added today"),
    (3, "1 to 3 days old"),
    (7, "4 to 7 days old"),
    (14, "1 to 2 weeks old"),
    (30, "2 weeks to a month old"),
)
OLDEST_BAND = "over a month old"

SYSTEM = (
    "You simulate one user of a to-do app. The app has just shown them a tip "
    "suggesting one of their tasks. Stay in character: react as this user "
    "would, at this hour, to this task. Answer with one JSON object and nothing "
    'else: {"reaction": "done" | "dismissed" | "snoozed", "dwell_ms": the whole '
    f"milliseconds they spent on it, 0 to {MAX_DWELL_MS}}}. "
    '"done" means they did the task now; a few seconds spent means they ticked '
    "it off without doing it."
)


def age_band(days: int) -> int:
    """The band of a task's age: an index into AGE_BANDS, or len(AGE_BANDS)."""
    for index, (upto, _) in enumerate(AGE_BANDS):
        if days <= upto:
            return index
    return len(AGE_BANDS)


def _percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def messages_for(
    persona: personas.Persona, *, hour: int, overdue: bool, band: int, priority: int
) -> list[dict[str, str]]:
    """The chat messages asking how ``persona`` reacts to one tip."""
    preferred = (
        "no hour stands out"
        if persona.preferred_hour is None
        else f"most active around {persona.preferred_hour:02d}:00"
    )
    dwell = (
        "unknown"
        if persona.mean_dwell_ms_30d is None
        else f"{persona.mean_dwell_ms_30d / 1000:.0f} s"
    )
    age = AGE_BANDS[band][1] if band < len(AGE_BANDS) else OLDEST_BAND
    user = (
        f"The user: {persona.description}\n"
        f"Their last 30 days: {persona.tip_volume_30d} tips shown, "
        f"{_percent(persona.completion_rate_30d)} done, "
        f"{_percent(persona.dismiss_rate_30d)} dismissed, "
        f"{dwell} spent on a tip on average, {preferred}.\n"
        f"It is {hour:02d}:00. The tip suggests a task of priority {priority} "
        f"(1 low to 4 urgent), {'overdue' if overdue else 'not overdue'}, {age}.\n"
        "How does the user react?"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def prompt_key(*, model: str, messages: list[dict[str, str]]) -> str:
    """The cache's key: a digest of everything that makes the answer."""
    canonical = json.dumps(
        {"model": model, "version": PROMPT_VERSION, "messages": messages},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_reaction(text: str) -> tuple[int, int] | None:
    """(kind code, dwell in ms) from an answer of exactly the asked shape, or
    None: not JSON, another shape, an unknown reaction, a dwell that is not a
    whole number in range."""
    try:
        answer = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(answer, dict) or set(answer) != {"reaction", "dwell_ms"}:
        return None
    reaction, dwell = answer["reaction"], answer["dwell_ms"]
    if reaction not in REACTIONS:
        return None
    if isinstance(dwell, float) and dwell.is_integer():
        dwell = int(dwell)
    if isinstance(dwell, bool) or not isinstance(dwell, int):
        return None
    if not 0 <= dwell <= MAX_DWELL_MS:
        return None
    return REACTIONS[reaction], dwell


@dataclass(frozen=True, slots=True)
class Asked:
    """A prompt and the model's answer to it, to keep."""

    key: str
    messages: list[dict[str, str]]
    answer: str


class AnswerCache(Protocol):
    def get_many(self, keys: Collection[str]) -> dict[str, str]:
        """The kept answers of those keys that have one."""
        ...

    def put_many(self, asked: list[Asked]) -> dict[str, str]:
        """Keep answers; for a key kept already (another worker asked too),
        the kept answer wins. Answers every key's kept answer."""
        ...


@dataclass(slots=True)
class JudgeStats:
    """What a judge did, summed over its calls: reported with the run."""

    reactions: int = 0
    fallbacks_invalid: int = 0  # the answer was unusable (kept: a rerun agrees)
    fallbacks_unavailable: int = 0  # no answer (not kept: a rerun asks again)
    prompts: int = 0  # distinct prompts looked up, per round and policy
    cached: int = 0  # of which answered already (by the cache, or this chunk)
    asked: int = 0  # of which asked of the model

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LlmJudge:
    """A ``Judge`` asking a model through ``ask(messages) -> text`` (None when
    it could not answer), with answers kept in ``cache``.

    ``uniforms`` is the rule judge's, so the world (candidates and uniforms)
    is the same as under the rule judge, and a fallback is the rule judge's
    reaction for that (user, round). One instance serves one chunk: its
    ``stats`` are that chunk's.
    """

    name = "llm"
    uniforms = RuleJudge.uniforms

    def __init__(
        self,
        *,
        ask: Callable[[list[dict[str, str]]], str | None],
        cache: AnswerCache,
        model: str,
        concurrency: int = 4,
    ) -> None:
        self._ask = ask
        self._cache = cache
        self.model = model
        self.prompt_version = PROMPT_VERSION
        self._concurrency = concurrency
        self._rule = RuleJudge()
        self._prompts: dict[tuple, tuple[str, list[dict[str, str]]]] = {}
        self._lock = threading.Lock()
        self._unavailable_asks = 0
        self._read: dict[str, str] = {}  # answers read or kept in this chunk
        self.stats = JudgeStats()

    def _prompt(self, situation: tuple) -> tuple[str, list[dict[str, str]]]:
        """(key, messages) of one (persona, hour, overdue, band, priority)."""
        found = self._prompts.get(situation)
        if found is None:
            persona, hour, overdue, band, priority = situation
            messages = messages_for(
                personas.PERSONAS[persona],
                hour=hour,
                overdue=overdue,
                band=band,
                priority=priority,
            )
            found = prompt_key(model=self.model, messages=messages), messages
            self._prompts[situation] = found
        return found

    def _answers(self, prompts: Mapping[str, list[dict[str, str]]]) -> dict[str, str]:
        """Every prompt's answer: those this judge has read already, those
        kept, then the model's for the rest (kept in turn). A prompt the model
        could not answer is left out."""
        answers = {key: self._read[key] for key in prompts if key in self._read}
        unread = [key for key in prompts if key not in answers]
        if unread:
            answers.update(self._cache.get_many(unread))
        missing = [key for key in prompts if key not in answers]
        self.stats.prompts += len(prompts)
        self.stats.cached += len(answers)
        if missing:
            answers.update(self._ask_and_keep({key: prompts[key] for key in missing}))
        self._read.update(answers)
        return answers

    def _ask_and_keep(
        self, prompts: Mapping[str, list[dict[str, str]]]
    ) -> dict[str, str]:
        """Ask the model each prompt, a few at once, and keep what it says."""
        self.stats.asked += len(prompts)
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            texts = list(pool.map(self._ask_once, prompts.values()))
        asked = [
            Asked(key, messages, text)
            for (key, messages), text in zip(prompts.items(), texts, strict=True)
            if text is not None
        ]
        return self._cache.put_many(asked) if asked else {}

    def _ask_once(self, messages: list[dict[str, str]]) -> str | None:
        """Ask, unless the model has failed too often in this chunk already."""
        with self._lock:
            if self._unavailable_asks >= UNAVAILABLE_LIMIT:
                return None
        answer = self._ask(messages)
        if answer is None:
            with self._lock:
                self._unavailable_asks += 1
        return answer

    def react(
        self,
        *,
        persona: np.ndarray,
        hour: np.ndarray,
        is_overdue: np.ndarray,
        task_age_days: np.ndarray,
        priority: np.ndarray,
        uniforms: np.ndarray,
    ) -> Reactions:
        fallback = self._rule.react(
            persona=persona,
            hour=hour,
            is_overdue=is_overdue,
            task_age_days=task_age_days,
            priority=priority,
            uniforms=uniforms,
        )
        situations = [
            (int(p), int(h), bool(o), age_band(int(a)), int(q))
            for p, h, o, a, q in zip(
                persona, hour, is_overdue, task_age_days, priority, strict=True
            )
        ]
        prompted = [self._prompt(s) for s in situations]
        keys = [key for key, _ in prompted]
        prompts = dict(prompted)
        answers = self._answers(prompts)
        kind = fallback.kind.copy()
        dwell = fallback.dwell_ms.copy()
        for user, key in enumerate(keys):
            text = answers.get(key)
            parsed = None if text is None else parse_reaction(text)
            if parsed is not None:
                kind[user], dwell[user] = parsed
            elif text is None:
                self.stats.fallbacks_unavailable += 1
            else:
                self.stats.fallbacks_invalid += 1
        self.stats.reactions += len(keys)
        return Reactions(kind=kind, dwell_ms=dwell.astype(float))
