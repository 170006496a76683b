"""Admin for policies and their logs. Learned state and logs are read-only here:
they change only through the services (decisions, rewards, resets)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

from policies import bandits
from policies.models import BanditState, Decision, Policy, Reward


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False  # logs grow large; skip the second COUNT(*)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "role", "enabled", "algorithm", "dimension", "params")
    list_filter = ("role", "algorithm")
    search_fields = ("name",)
    readonly_fields = (
        "name",
        "algorithm",
        "dimension",
        "params",
        "role",
        "enabled",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BanditState)
class BanditStateAdmin(ReadOnlyAdmin):
    list_display = (
        "user_id",
        "policy",
        "reward_count",
        "cumulative_reward",
        "updated_at",
    )
    list_filter = ("policy",)
    list_select_related = ("policy",)
    search_fields = ("=user_id",)
    fields = (
        "policy",
        "user_id",
        "reward_count",
        "cumulative_reward",
        "theta_table",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    @admin.display(description="Weights θ = A⁻¹b")
    def theta_table(self, state: BanditState):
        theta = bandits.theta(state.a, state.b)
        return format_html_join(
            "",
            "<div><code>{}</code>: {}</div>",
            (
                (label, f"{value:+.6f}")
                for label, value in zip(state.policy.feature_labels, theta, strict=True)
            ),
        )


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user_id",
        "policy",
        "role",
        "tip_id",
        "score",
        "propensity",
        "exploring",
    )
    list_filter = ("policy", "role", "exploring")
    list_select_related = ("policy",)
    search_fields = ("=user_id", "=tip_id", "=request_id")
    ordering = ("-created_at",)


@admin.register(Reward)
class RewardAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user_id", "policy", "tip_id", "reward", "event_id")
    list_filter = ("policy",)
    list_select_related = ("policy",)
    search_fields = ("=user_id", "=tip_id", "=event_id")
    ordering = ("-created_at",)
    raw_id_fields = ("decision",)
