"""The prompt registry of /generate: versions of the prompt that writes a tip.

Prompts live in code, keyed by a stable version string. A version is immutable
once used: its digest is pinned in ``PINNED`` and a system check (``checks.py``)
stops start-up if the text of a pinned version changes, so every tip stored with
a version was written by that exact prompt and the reward per version compares
like with like. To change a prompt, add a version (and pin it once it ships).

Which version a request uses: the one it names, else ``OO_ML_PROMPT_VERSION``,
else "v1". No Django here but the settings' name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Prompt:
    version: str
    description: str  # what it tries, for the admin
    system: str
    user: str  # a str.format template over the task (see ``messages_for``)
    temperature: float = 0.7
    max_tokens: int = 120

    @property
    def digest(self) -> str:
        """SHA-256 of everything that shapes the answer."""
        fields = asdict(self)
        fields.pop("description")
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


PROMPTS: dict[str, Prompt] = {
    prompt.version: prompt
    for prompt in (
        Prompt(
            version="v1",
            description="Plain: one friendly sentence naming the task.",
            system=(
                "You write the short tip a to-do app shows to nudge its user "
                "towards one of their tasks. One or two friendly sentences, at "
                "most 200 characters, in the second person. Name the task. No "
                "greeting, no emoji, no quotes, no markdown: only the tip."
            ),
            user="The task: {content}\nFrom: {source}\nDetails: {details}",
        ),
        Prompt(
            version="v2-urgency",
            description="Leads with why now: overdue, priority, how long it waits.",
            system=(
                "You write the short tip a to-do app shows to nudge its user "
                "towards one of their tasks. One or two sentences, at most 200 "
                "characters, in the second person. Start with why now is a good "
                "time (overdue, important, waiting long, or quick to finish), "
                "then name the task. No greeting, no emoji, no quotes, no "
                "markdown: only the tip."
            ),
            user="The task: {content}\nFrom: {source}\nDetails: {details}",
            temperature=0.5,
        ),
    )
}

# Versions shipped: their digests may never change (checks.py). Pin a new
# version here when it ships.
PINNED: dict[str, str] = {
    "v1": "27768f0a23b7810b4f7eaba9475ccbad9c84a4f30ce0dc81444aed960bee815c",
    "v2-urgency": "d334cb861b0f0cd71b0b612bdad9f54af138016a30e1ab286f3696e9e4b6d2fc",
}


def prompt_get(version: str) -> Prompt | None:
    return PROMPTS.get(version)


def _details(features: dict[str, Any]) -> str:
    parts = []
    if features.get("priority") is not None:
        parts.append(f"priority {features['priority']} of 4 (4 is urgent)")
    if features.get("is_overdue"):
        parts.append("overdue")
    age = features.get("task_age_days")
    if age is not None:
        parts.append(f"added {age:g} days ago")
    return ", ".join(parts) or "none"


def messages_for(prompt: Prompt, task: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages asking for a tip about ``task`` (id, content, source,
    features as /score takes a candidate)."""
    user = prompt.user.format(
        content=task.get("content") or f"(untitled task {task['id']})",
        source=task.get("source") or "unknown",
        details=_details(task.get("features") or {}),
    )
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": user},
    ]
