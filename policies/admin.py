"""Admin for policies: the control room at /admin/policies/, and read-only state
and logs. Learned state changes only through the services (decisions, rewards,
resets); the buttons here call the same services as the API and are recorded.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from oo_ml import formatting
from oo_ml.errors import DomainError
from oo_ml.permissions import POLICY_CHANGE, POLICY_VIEW, USER_RESET, staff_may
from policies import bandits, gate, selectors, services, stats
from policies.models import (
    BanditState,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    Role,
)

HISTORY_SHOWN = 20
DECISIONS_SHOWN = 10
LOG_ROWS_PER_PAGE = 50


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False  # logs grow large; skip the second COUNT(*)
    list_per_page = LOG_ROWS_PER_PAGE

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def object_or_404(self, request: HttpRequest, object_id: str):
        """The object of a custom admin URL; a malformed id is a 404 as well."""
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} {object_id!r}.")
        return obj


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Back to the page the button was on, if it is one of ours."""
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, {request.get_host()}, require_https=request.is_secure()
    ):
        target = default
    return HttpResponseRedirect(target)


def _history(changes) -> str:
    return render_to_string("admin/policies/_history.html", {"changes": changes})


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _inputs(decision: Decision) -> dict:
    """What the policy scored on: the context's hour (every candidate's, whatever
    its own hour_of_day said), the day, and the profile values it used."""
    profile = []
    if decision.policy.dimension == bandits.PROFILE_DIMENSION:
        profile = [(name, decision.profile.get(name)) for name in bandits.PROFILE_NAMES]
    return {
        "hour": decision.context["hour_of_day"],
        "day": _DAYS[decision.context["day_of_week"]],
        "profile": profile,
    }


def _why(decisions) -> str:
    """Each decision with what it was scored on and, per candidate, its task
    features and what the policy estimated."""
    explained = []
    for decision in decisions:
        bonuses = decision.bonuses or [None] * len(decision.candidates)
        rows = [
            {
                "id": candidate["id"],
                "content": candidate.get("content"),
                "features": candidate["features"],
                "estimate": estimate,
                "bonus": bonus,
                "bound": None if bonus is None else estimate + bonus,
                "picked": index == decision.pick_index,
                "shared": None
                if decision.shared_estimates is None
                else decision.shared_estimates[index],
                "personal": None
                if decision.shared_estimates is None
                else estimate - decision.shared_estimates[index],
            }
            for index, (candidate, estimate, bonus) in enumerate(
                zip(decision.candidates, decision.estimates, bonuses, strict=True)
            )
        ]
        explained.append((decision, _inputs(decision), rows))
    return render_to_string("admin/policies/_why.html", {"decisions": explained})


def control_room(request: HttpRequest) -> TemplateResponse:
    """Every policy at a glance, its shadow switch, and the latest changes."""
    if not staff_may(request.user, POLICY_VIEW):
        raise PermissionDenied
    activity = selectors.policy_activity(since=timezone.now() - timedelta(days=1))
    shared = selectors.shared_models_current()
    for row in activity:
        row.policy.shared_model = shared.get(row.policy.id)
    context = {
        **admin.site.each_context(request),
        "title": "Policies",
        "subtitle": "Control room",
        "activity": activity,
        "history": PolicyChange.objects.select_related("policy")[:HISTORY_SHOWN],
        "can_toggle": _can_toggle(request),
        "to_undo": selectors.promotion_to_undo(),
        "min_samples": stats.MIN_SAMPLES,
        "min_effective": stats.MIN_EFFECTIVE_SAMPLES,
        "value_minutes": settings.SHADOW_VALUE_SECONDS / 60,
    }
    return TemplateResponse(request, "admin/policies/control_room.html", context)


def _can_toggle(request: HttpRequest) -> bool:
    return staff_may(request.user, POLICY_CHANGE)


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    """Read-only: a policy changes only by its switch (or promotion), recorded."""

    change_form_template = "admin/policies/policy/change_form.html"
    list_display = (
        "name",
        "role",
        "enabled",
        "learns_live",
        "algorithm",
        "dimension",
        "params",
    )
    list_filter = ("role", "algorithm")
    search_fields = ("name",)
    fields = (
        "name",
        "algorithm",
        "dimension",
        "params",
        "role",
        "enabled",
        "learns_live",
        "description",
        "created_at",
        "updated_at",
        "history",
    )
    readonly_fields = fields

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "rollback/",
                wrap(require_POST(self.rollback_view)),
                name="policies_policy_rollback",
            ),
            path(
                "<path:object_id>/toggle/",
                wrap(require_POST(self.toggle_view)),
                name="policies_policy_toggle",
            ),
            path(
                "<path:object_id>/learning/",
                wrap(require_POST(self.learning_view)),
                name="policies_policy_learning",
            ),
            path(
                "<path:object_id>/promote/",
                wrap(self.promote_view),
                name="policies_policy_promote",
            ),
            *super().get_urls(),
        ]

    def promote_view(self, request: HttpRequest, object_id: str):
        """GET: the evidence for promoting this shadow, or why it is refused.
        POST: promote it (the service checks the evidence again, under lock)."""
        policy = self.object_or_404(request, object_id)
        if not self.has_view_permission(request, policy):
            raise PermissionDenied
        if request.method == "POST":  # the service finds the evidence, under lock
            if not _can_toggle(request):
                raise PermissionDenied
            try:
                services.policy_promote(
                    name=policy.name,
                    actor=request.user,
                    evidence_for=gate.promotion_evidence,
                )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
                return HttpResponseRedirect(request.path)
            self.message_user(
                request, f"Promoted: {policy.name} is now the active policy."
            )
            return HttpResponseRedirect(reverse("policies-control-room"))
        active = Policy.objects.filter(role=Role.ACTIVE).first()
        evidence = None
        if active is not None and policy.role == Role.SHADOW:
            evidence = gate.promotion_evidence(shadow=policy, active=active)
        if policy.role != Role.SHADOW:
            refusal = f"{policy.name} is {policy.role}: only a shadow can be promoted."
        elif active is None:
            refusal = "No policy is active: there is nothing to compare with."
        else:
            refusal = services.promotion_refusal(
                shadow=policy.name, active=active.name, evidence=evidence
            )
        margin = services.gate_margin()
        verdict = chart = None
        if evidence is not None:
            verdict = stats.gate_verdict(evidence.interval, margin=margin)
            if evidence.low is not None:
                chart = gate.interval_chart(
                    mean=evidence.difference,
                    low=evidence.low,
                    high=evidence.high,
                    margin=margin,
                    outcome=verdict.outcome,
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Promote {policy.name}?",
            "opts": self.opts,
            "policy": policy,
            "active": active,
            "evidence": evidence,
            "margin": margin,
            "verdict": verdict,
            "gate": chart,
            "refusal": refusal,
            "can_promote": _can_toggle(request) and refusal is None,
        }
        return TemplateResponse(request, "admin/policies/promote.html", context)

    def rollback_view(self, request: HttpRequest):
        if not _can_toggle(request):
            raise PermissionDenied
        try:
            policy = services.policy_rollback(actor=request.user)
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
        else:
            self.message_user(request, f"Rolled back: {policy.name} is active again.")
        return HttpResponseRedirect(reverse("policies-control-room"))

    def toggle_view(self, request: HttpRequest, object_id: str):
        """The scoring switch: POST ``enabled=on|off``, then back."""
        return self._switch(
            request,
            object_id,
            field="enabled",
            service=services.policy_toggle,
            said="Shadow {name} is {state}.",
        )

    def learning_view(self, request: HttpRequest, object_id: str):
        """The learning switch: POST ``learns_live=on|off``, then back."""
        return self._switch(
            request,
            object_id,
            field="learns_live",
            service=services.policy_learning_set,
            said="Learning from live rewards is {state} for {name}.",
        )

    def _switch(self, request, object_id, *, field: str, service, said: str):
        policy = self.object_or_404(request, object_id)
        if not _can_toggle(request):
            raise PermissionDenied
        wanted = {"on": True, "off": False}.get(request.POST.get(field))
        try:
            policy = service(name=policy.name, actor=request.user, **{field: wanted})
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
        else:
            state = "on" if getattr(policy, field) else "off"
            self.message_user(request, said.format(name=policy.name, state=state))
        return _back(request, reverse("policies-control-room"))

    def render_change_form(self, request, context, *args, **kwargs):
        context["can_toggle"] = _can_toggle(request)
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="History, newest first")
    def history(self, policy: Policy) -> str:
        return _history(policy.changes.select_related("policy")[:HISTORY_SHOWN])


@admin.register(PolicyChange)
class PolicyChangeAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "policy", "action", "summary", "actor_name")
    list_filter = ("action", "policy")
    list_select_related = ("policy",)
    search_fields = ("=user_id", "actor_name")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "policy",
        "action",
        "summary",
        "user_id",
        "actor",
        "actor_name",
        "before",
        "after",
        "evidence",
    )
    readonly_fields = fields


@admin.register(BanditState)
class BanditStateAdmin(ReadOnlyAdmin):
    """One user's state under one policy: θ, counters, and why recent picks won."""

    change_form_template = "admin/policies/banditstate/change_form.html"
    list_display = (
        "user_id",
        "policy",
        "reward_count",
        "cumulative_reward_shown",
        "updated_at",
    )
    list_filter = ("policy",)
    list_select_related = ("policy",)
    search_fields = ("=user_id",)
    fields = (
        "policy",
        "user_id",
        "reward_count",
        "learned",
        "cumulative_reward_shown",
        "pulls",
        "theta_table",
        "created_at",
        "updated_at",
        "recent_decisions",
    )
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        """Searching a user id lists every policy: those under which the user
        has no state yet as well, below the states found."""
        user_id = request.GET.get("q", "").strip()
        if user_id:
            extra_context = {
                **(extra_context or {}),
                "searched_user": user_id,
                "missing": selectors.policies_without_state(user_id=user_id),
            }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        reset = self.admin_site.admin_view(require_POST(self.reset_view))
        return [
            path("<path:object_id>/reset/", reset, name="policies_banditstate_reset"),
            *super().get_urls(),
        ]

    def reset_view(self, request: HttpRequest, object_id: str):
        """The same reset as POST /reset/<user_id>: every policy, recorded."""
        state = self.object_or_404(request, object_id)
        if not staff_may(request.user, USER_RESET):
            raise PermissionDenied
        try:
            result = services.user_reset(user_id=state.user_id, actor=request.user)
        except DomainError as error:  # say, another admin reset them just now
            self.message_user(request, error.detail, messages.ERROR)
        else:
            self.message_user(
                request,
                f"User {result.user_id} reset: {result.states_deleted} states and "
                f"{result.decisions_deleted} decisions cleared.",
            )
        return HttpResponseRedirect(
            reverse("admin:policies_banditstate_changelist") + f"?q={state.user_id}"
        )

    def render_change_form(self, request, context, *args, **kwargs):
        context["can_reset"] = staff_may(request.user, USER_RESET)
        return super().render_change_form(request, context, *args, **kwargs)

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

    @admin.display(description="Cumulative reward", ordering="cumulative_reward")
    def cumulative_reward_shown(self, state: BanditState) -> str:
        return formatting.total(state.cumulative_reward)

    @admin.display(description="Of which learned from other policies' decisions")
    def learned(self, state: BanditState) -> int:
        return selectors.user_learned_count(policy=state.policy, user_id=state.user_id)

    @admin.display(description="Pulls (explored)")
    def pulls(self, state: BanditState) -> str:
        counts = selectors.user_pulls(policy=state.policy, user_id=state.user_id)
        return format_html("{pulls} ({explorations} explored)", **counts)

    @admin.display(description="Last decisions: why each pick won")
    def recent_decisions(self, state: BanditState) -> str:
        decisions = Decision.objects.filter(
            policy=state.policy, user_id=state.user_id
        ).order_by("-created_at", "-id")[:DECISIONS_SHOWN]
        for decision in decisions:
            decision.policy = state.policy
        return _why(decisions)


@admin.display(description="Policy", ordering="policy__name")
def policy_name(obj) -> str:
    """The policy's name alone: its role now is not the row's role then."""
    return obj.policy.name


def short_link(url: str, value) -> str:
    """An id as its last characters, linking to its page; the whole on hover."""
    return format_html(
        '<a href="{}" title="{}"><code class="oo-id">{}</code></a>',
        url,
        value,
        formatting.short_id(value),
    )


def short_code(value) -> str:
    """An id as its last characters, the whole on hover; "—" for none."""
    if not value:
        return "—"
    return format_html(
        '<code class="oo-id" title="{}">{}</code>', value, formatting.short_id(value)
    )


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user_id",
        policy_name,
        "role",
        "tip_id",
        "score_shown",
        "propensity_shown",
        "exploring",
    )
    list_filter = ("policy", "role", "exploring")
    list_select_related = ("policy",)
    search_fields = ("=user_id", "=tip_id", "=request_id")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    # The candidates' raw hour_of_day is left out: scoring used the context's.
    fields = (
        "created_at",
        "policy",
        "role",
        "user_id",
        "request_id",
        "tip_id",
        "score_shown",
        "propensity_shown",
        "exploring",
        "why",
    )
    readonly_fields = fields

    @admin.display(description="Score", ordering="score")
    def score_shown(self, decision: Decision) -> str:
        return formatting.significant(decision.score)

    @admin.display(description="Propensity", ordering="propensity")
    def propensity_shown(self, decision: Decision) -> str:
        return formatting.significant(decision.propensity)

    @admin.display(description="Why this pick")
    def why(self, decision: Decision) -> str:
        return _why([decision])


@admin.register(Reward)
class RewardAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user_id",
        policy_name,
        "tip_id",
        "reward",
        "learned",
        "short_event_id",
    )
    list_filter = ("policy",)
    list_select_related = ("policy",)
    search_fields = ("=user_id", "=tip_id", "=event_id")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    raw_id_fields = ("decision",)

    @admin.display(description="Event id", ordering="event_id")
    def short_event_id(self, reward: Reward) -> str:
        return short_code(reward.event_id)
