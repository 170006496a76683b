"""Admin for generated tips: read-only, with the prompt registry on top of the
list: every version's text, whether it is pinned, and the mean reward of the
decisions its tips were written for."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin

from generation.models import Generation
from generation.prompts import DEFAULT_VERSION
from generation.selectors import prompt_version_rewards
from oo_ml.llm import llm_config, llm_off_reason
from policies.admin import ReadOnlyAdmin


@admin.register(Generation)
class GenerationAdmin(ReadOnlyAdmin):
    change_list_template = "admin/generation/generation/change_list.html"
    list_display = ("created_at", "user_id", "task_id", "prompt_version", "model")
    list_filter = ("prompt_version", "model")
    search_fields = ("=user_id", "=task_id", "=decision_id")
    readonly_fields = (
        "id",
        "created_at",
        "user_id",
        "task_id",
        "decision_id",
        "prompt_version",
        "model",
        "text",
    )

    def changelist_view(self, request, extra_context=None):
        config = llm_config()
        context = {
            "versions": prompt_version_rewards(),
            "default_version": settings.PROMPT_VERSION or DEFAULT_VERSION,
            "llm_model": config.model if config else None,
            "llm_off": llm_off_reason(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)
