"""API tokens in the admin: who holds one and since when, never its value.

Adding a token makes a new value and shows it once, in the page's message;
deleting one revokes it (processes that verified it stop trusting it within
``TOKEN_CACHE_SECONDS``).
"""

from __future__ import annotations

from django.contrib import admin, messages

from oo_ml.auth import token_value_new
from oo_ml.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "name", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "name")
    autocomplete_fields = ("user",)
    date_hierarchy = "created_at"

    def get_fields(self, request, obj=None):
        return ("user", "name") if obj is None else ("user", "name", "created_at")

    def has_change_permission(self, request, obj=None):
        return False  # a token is made or revoked, never edited

    def save_model(self, request, obj, form, change):
        value, obj.digest = token_value_new()
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"The new token of {obj.user}: {value} — copy it now, it is not shown "
            "again (only its digest is stored).",
        )
