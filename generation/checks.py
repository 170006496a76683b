"""System checks: a pinned prompt version that changed, or a default version
the registry lacks, stops start-up (``manage.py check`` and every command)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from generation.prompts import PINNED, PROMPTS


@register()
def prompt_registry_check(app_configs=None, **kwargs) -> list[Error]:
    errors = []
    for version, digest in PINNED.items():
        prompt = PROMPTS.get(version)
        if prompt is None:
            errors.append(
                Error(
                    f"Prompt version {version!r} is pinned but not in the registry: "
                    "a version in use may not be removed.",
                    id="generation.E001",
                )
            )
        elif prompt.digest != digest:
            errors.append(
                Error(
                    f"Prompt version {version!r} changed (digest {prompt.digest}, "
                    f"pinned {digest}): a version in use is immutable; add a new "
                    "version instead.",
                    id="generation.E002",
                )
            )
    if settings.PROMPT_VERSION not in PROMPTS:
        errors.append(
            Error(
                f"OO_ML_PROMPT_VERSION={settings.PROMPT_VERSION!r} is not a prompt "
                f"version: one of {', '.join(PROMPTS)}.",
                id="generation.E003",
            )
        )
    return errors
