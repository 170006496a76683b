"""Admin for profiles and events: both read-only, as every log and learned value.

A profile's page shows the five features with what they mean, when they were
computed and how stale that is, the user's events by kind over the window, and a
link to the user's bandit state under every policy.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from oo_ml import formatting
from policies.admin import ReadOnlyAdmin, short_code, short_link
from profiles import features, selectors
from profiles.models import Event, Profile


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@admin.register(Profile)
class ProfileAdmin(ReadOnlyAdmin):
    list_display = ("user_id", *features.NAMES, "computed_at", "freshness")
    search_fields = ("=user_id",)
    ordering = ("user_id",)
    fields = (
        "user_id",
        "feature_table",
        "computed_at",
        "freshness",
        "event_counts",
        "bandit_state",
    )
    readonly_fields = fields

    @admin.display(description="Features")
    def feature_table(self, profile: Profile):
        rows = format_html_join(
            "",
            '<tr><th><code>{}</code></th><td class="feature-value" data-feature="{}">'
            "{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f.name,
                    f.name,
                    _value(getattr(profile, f.name)),
                    f.range_text,
                    f.description,
                )
                for f in features.FEATURES
            ),
        )
        return format_html(
            '<table id="profile-features"><thead><tr><th>feature</th><th>value</th>'
            "<th>range</th><th>how it is computed</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="Freshness")
    def freshness(self, profile: Profile) -> str:
        ttl = settings.PROFILE_TTL_SECONDS
        state = "stale" if profile.is_stale(ttl_seconds=ttl) else "fresh"
        # Events add to the counts as they arrive; a recount takes out those
        # that left the window, and is due once the profile is stale.
        return (
            f"recounted {formatting.ago(profile.computed_at)}, {state}, "
            "counting every event since"
        )

    @admin.display(description=f"Events by kind, last {features.WINDOW_DAYS} days")
    def event_counts(self, profile: Profile):
        counts = selectors.event_kind_counts(
            user_id=profile.user_id, now=timezone.now()
        )
        events_url = reverse("admin:profiles_event_changelist")
        return format_html_join(
            "",
            '<div><a href="{}">{}</a>: <span data-kind="{}">{}</span></div>',
            (
                (
                    f"{events_url}?{urlencode({'q': profile.user_id, 'kind': kind})}",
                    kind,
                    kind,
                    n,
                )
                for kind, n in counts.items()
            ),
        )

    @admin.display(description="Bandit state")
    def bandit_state(self, profile: Profile):
        url = reverse("admin:policies_banditstate_changelist")
        return format_html(
            '<a href="{}?{}">this user\'s state under every policy</a>',
            url,
            urlencode({"q": profile.user_id}),
        )


class HasDecisionFilter(admin.SimpleListFilter):
    title = "decision"
    parameter_name = "has_decision"

    def lookups(self, request, model_admin):
        return (("yes", "tied to a decision"), ("no", "no decision"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(decision__isnull=False)
        if self.value() == "no":
            return queryset.filter(decision__isnull=True)
        return queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = (
        "occurred_at",
        "user_id",
        "tip_id",
        "kind",
        "dwell",
        "hour",
        "decision_link",
        "short_event_id",
    )
    list_filter = ("kind", HasDecisionFilter)
    date_hierarchy = "occurred_at"
    search_fields = ("=user_id", "=tip_id", "=event_id")
    ordering = ("-occurred_at",)
    raw_id_fields = ("decision",)

    @admin.display(description="Dwell", ordering="dwell_ms")
    def dwell(self, event: Event) -> str:
        return "—" if event.dwell_ms is None else f"{event.dwell_ms / 1000:,.1f} s"

    @admin.display(description="Hour", ordering="hour_of_day")
    def hour(self, event: Event) -> int:
        return event.hour_of_day

    @admin.display(description="Decision")
    def decision_link(self, event: Event) -> str:
        if event.decision_id is None:
            return "—"
        url = reverse("admin:policies_decision_change", args=[event.decision_id])
        return short_link(url, event.decision_id)

    @admin.display(description="Event id", ordering="event_id")
    def short_event_id(self, event: Event) -> str:
        return short_code(event.event_id)
