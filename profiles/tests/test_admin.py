"""The admin: a read-only profile page that explains itself, and the event log."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from profiles.models import Event, Profile
from profiles.services import events_record_bulk, profile_refresh


def history(user_id: str = "u1") -> None:
    """10 served, 4 done (60 s, 60 s, 5 min, 5 s) at hour 20, 2 dismissed,
    1 snoozed, and one served event 40 days ago that no longer counts."""
    events = (
        [{"kind": "served"}] * 10
        + [
            {"kind": "done", "dwell_ms": dwell, "hour_of_day": 20}
            for dwell in (60_000, 60_000, 300_000, 5_000)
        ]
        + [{"kind": "dismissed"}] * 2
        + [{"kind": "snoozed"}]
        + [
            {
                "kind": "served",
                "occurred_at": timezone.now() - dt.timedelta(days=40),
            }
        ]
    )
    events_record_bulk([{"user_id": user_id, "tip_id": "t", **e} for e in events])
    profile_refresh(user_id=user_id)


EXPECTED = {
    "completion_rate_30d": "0.4",
    "dismiss_rate_30d": "0.2",
    "mean_dwell_ms_30d": "106250",
    "preferred_hour": "20",
    "tip_volume_30d": "10",
}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/admin/profiles/profile/",
        "/admin/profiles/event/",
        "/admin/profiles/event/?kind__exact=done",
        "/admin/profiles/event/?has_decision=yes",
        "/admin/profiles/event/?has_decision=no&q=u1",
        "/admin/profiles/event/?occurred_at__year=2020",
    ],
)
def test_every_changelist_and_filter_opens(client, staff_user, url):
    history()
    client.force_login(staff_user)
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_the_event_filters_filter(client, staff_user, api):
    history()
    decision = api.post(
        "/score", {"user_id": "u1", "candidates": [{"id": "t"}]}, format="json"
    ).json()["decision_id"]
    api.post(
        "/events",
        {"user_id": "u1", "tip_id": "t", "kind": "served", "decision_id": decision},
        format="json",
    )
    client.force_login(staff_user)

    def shown(query: str) -> int:
        return client.get(f"/admin/profiles/event/?{query}").context["cl"].result_count

    assert shown("") == 19
    assert shown("kind__exact=done") == 4
    assert shown("has_decision=yes") == 1
    assert shown("has_decision=no") == 18
    assert shown("q=nobody") == 0


@pytest.mark.django_db
def test_the_profile_page_shows_values_meaning_freshness_counts_and_state_link(
    client, staff_user
):
    history()
    client.force_login(staff_user)
    profile = Profile.objects.get()
    html = client.get(f"/admin/profiles/profile/{profile.pk}/change/").content.decode()

    for name, value in EXPECTED.items():
        assert re.search(rf'data-feature="{name}">{value}<', html), name
    assert "ties to the earliest" in html  # the registry's description
    # Recounted under a minute ago.
    assert "recounted just now, fresh, counting every event since" in html
    for kind, n in {"served": 10, "done": 4, "dismissed": 2, "snoozed": 1}.items():
        assert f'data-kind="{kind}">{n}<' in html
    assert 'data-kind="viewed">0<' in html
    assert 'href="/admin/policies/banditstate/?q=u1"' in html
    assert 'name="_save"' not in html

    Profile.objects.update(computed_at=timezone.now() - dt.timedelta(hours=2))
    html = client.get(f"/admin/profiles/profile/{profile.pk}/change/").content.decode()
    assert re.search(r"2\xa0hours ago, stale", html)


@pytest.mark.django_db
def test_profiles_and_events_cannot_be_changed_or_deleted(client, staff_user):
    history()
    client.force_login(staff_user)
    profile, event = Profile.objects.get(), Event.objects.first()
    assert (
        client.post(
            f"/admin/profiles/profile/{profile.pk}/change/", {"tip_volume_30d": 1}
        ).status_code
        == 403
    )
    for model, obj in (("profile", profile), ("event", event)):
        response = client.post(
            f"/admin/profiles/{model}/{obj.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 403
    assert client.get("/admin/profiles/event/add/").status_code == 403
    assert Profile.objects.get().tip_volume_30d == 10
    assert Event.objects.count() == 18


def test_the_profile_page_shows_the_five_values_in_a_browser(admin_page):
    history("browser-user")
    admin_page.goto("/admin/profiles/profile/")
    admin_page.click("text=browser-user")
    admin_page.wait_for_selector("#profile-features")

    shown = {
        cell.get_attribute("data-feature"): cell.inner_text()
        for cell in admin_page.query_selector_all("#profile-features .feature-value")
    }
    assert shown == EXPECTED
    assert "fresh" in admin_page.inner_text("body")
    admin_page.click("text=this user's state under every policy")
    admin_page.wait_for_url("**/admin/policies/banditstate/?q=browser-user")


def test_the_events_list_shows_fifty_a_page_with_short_ids(client, staff_user):
    Event.objects.bulk_create(
        Event(
            user_id="u1",
            tip_id=f"t{i}",
            kind="viewed",
            hour_of_day=9,
            occurred_at=timezone.now(),
            event_id=f"viewed-01a241e3-8fb8-7969-b84f-{i:012d}",
        )
        for i in range(86)
    )
    client.force_login(staff_user)

    html = client.get("/admin/profiles/event/").content.decode()

    rows = re.findall(
        r'<td class="field-short_event_id"><code class="oo-id" title="([^"]+)">'
        r"([^<]+)</code></td>",
        html,
    )
    assert len(rows) == 50  # of 86
    assert all(short == f"…{full[-8:]}" for full, short in rows)
