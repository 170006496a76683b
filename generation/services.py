"""Writes: a tip's text from the LLM, stored with its prompt version."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings

from generation.models import Generation
from generation.prompts import DEFAULT_VERSION, PROMPTS, Prompt, messages_for
from generation.selectors import decision_owner
from oo_ml.errors import InvalidInput, NotFound
from oo_ml.llm import LlmUnavailable, llm_client

MAX_TIP_CHARS = 1_000  # a longer answer is not a tip


def prompt_resolve(version: str | None) -> Prompt:
    """The version a request names, else OO_ML_PROMPT_VERSION, else "v1"."""
    chosen = version or settings.PROMPT_VERSION or DEFAULT_VERSION
    prompt = PROMPTS.get(chosen)
    if prompt is None:
        raise InvalidInput(
            f"No prompt version {chosen!r}: one of {', '.join(PROMPTS)}.",
            field="prompt_version",
            code="unknown_prompt_version",
        )
    return prompt


def _decision_check(*, decision_id: uuid.UUID, user_id: str, task_id: str) -> None:
    """The decision the tip is written for: the user's, and its pick the task."""
    owner = decision_owner(decision_id=decision_id)
    if owner is None:
        raise NotFound(f"No decision {decision_id}.", field="decision_id")
    if owner != (user_id, task_id):
        raise InvalidInput(
            f"Decision {decision_id} picked {owner[1]!r} for {owner[0]!r}, not "
            f"{task_id!r} for {user_id!r}.",
            field="decision_id",
        )


def _tip_text(text: str) -> str:
    tip = text.strip().strip('"').strip()
    if not tip:
        raise LlmUnavailable("The LLM answered an empty text: retry later.")
    if len(tip) > MAX_TIP_CHARS:
        raise LlmUnavailable(
            f"The LLM answered {len(tip):,} characters, over the {MAX_TIP_CHARS:,} "
            "a tip may have: retry later."
        )
    return tip


def tip_generate(
    *,
    user_id: str,
    task: dict[str, Any],
    prompt_version: str | None = None,
    decision_id: uuid.UUID | None = None,
) -> Generation:
    """Write the tip for ``task`` with the resolved prompt version and store it.

    Everything is checked before the LLM is asked; nothing is stored when it
    cannot answer (503 ``llm_unavailable``, or ``llm_not_configured``). No
    transaction is held while it is asked.
    """
    prompt = prompt_resolve(prompt_version)
    if decision_id is not None:
        _decision_check(decision_id=decision_id, user_id=user_id, task_id=task["id"])
    with llm_client() as client:
        completion = client.complete(
            messages_for(prompt, task),
            temperature=prompt.temperature,
            max_tokens=prompt.max_tokens,
        )
    return Generation.objects.create(
        user_id=user_id,
        task_id=task["id"],
        decision_id=decision_id,
        prompt_version=prompt.version,
        model=completion.model,
        text=_tip_text(completion.text),
    )
