"""The admin shows policies, state and logs, and lets nobody edit learned state."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from policies import rollups, selectors, services, stats
from policies.models import (
    BanditState,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    ShadowValue,
)


@pytest.fixture
def history(api):
    decision = api.post(
        "/score",
        {"user_id": "u1", "candidates": [{"id": "a"}, {"id": "b"}]},
        format="json",
    ).json()
    api.post(
        "/reward",
        {
            "user_id": "u1",
            "tip_id": "a",
            "reward": 1.0,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model", ["policy", "banditstate", "decision", "reward", "policychange"]
)
def test_every_changelist_opens(client, staff_user, history, model):
    client.force_login(staff_user)
    assert client.get(f"/admin/policies/{model}/").status_code == 200


@pytest.mark.django_db
def test_a_state_page_shows_theta_with_its_labels_and_cannot_be_edited(
    client, staff_user, history
):
    client.force_login(staff_user)
    state = BanditState.objects.get(policy__name="egreedy-v2")
    page = client.get(f"/admin/policies/banditstate/{state.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Weights θ = A⁻¹b" in html and "hour_sin" in html and "dow_cos" in html
    assert 'name="_save"' not in html  # read-only: no save button
    # egreedy-v2 learned the active policy's reward: one of one, from another's.
    assert "Of which learned from other policies" in html
    assert re.search(r"learned from other policies.*?<div[^>]*>1</div>", html, re.S)
    response = client.post(
        f"/admin/policies/banditstate/{state.pk}/change/", {"reward_count": 99}
    )
    assert response.status_code == 403
    assert BanditState.objects.get(pk=state.pk).reward_count == 1


@pytest.mark.django_db
def test_logs_cannot_be_deleted_from_the_admin(client, staff_user, history):
    client.force_login(staff_user)
    for model, obj in (
        ("decision", Decision.objects.first()),
        ("reward", Reward.objects.first()),
    ):
        response = client.post(
            f"/admin/policies/{model}/{obj.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 403
    # The active policy's reward, and the rows of the two shadows learning from it.
    assert Decision.objects.count() == 1 and Reward.objects.count() == 3


def _decision(
    policy: str,
    request_id,
    tip_id: str,
    *,
    days_ago: float = 0,
    estimates=(0.0, 0.0),
    propensity: float = 1.0,
):
    return Decision.objects.create(
        request_id=request_id,
        policy=Policy.objects.get(name=policy),
        role=Policy.objects.get(name=policy).role,
        user_id="u1",
        candidates=[{"id": "a"}, {"id": "b"}],
        context={},
        profile={},
        features=[[0.0], [0.0]],
        estimates=list(estimates),
        pick_index=0 if tip_id == "a" else 1,
        tip_id=tip_id,
        score=0.0,
        propensity=propensity,
        exploring=False,
        created_at=timezone.now() - timedelta(days=days_ago),
    )


@pytest.fixture
def known_activity():
    """Four requests both answered (agreeing on 3; one of those 2 days old), one
    the shadow answered alone, and two rewards to the active policy."""
    for tip_a, tip_s, age in (
        ("a", "a", 0),
        ("a", "b", 0),
        ("b", "b", 0),
        ("a", "a", 2),
    ):
        request = uuid.uuid4()
        _decision("egreedy-v1", request, tip_a, days_ago=age)
        _decision("egreedy-v2", request, tip_s, days_ago=age)
    _decision("egreedy-v2", uuid.uuid4(), "b")
    active = Policy.objects.get(name="egreedy-v1")
    for value, age in ((1.0, 0), (-0.5, 3)):
        Reward.objects.create(
            policy=active,
            user_id="u1",
            tip_id="a",
            reward=value,
            fingerprint="x",
            features=[0.0],
            created_at=timezone.now() - timedelta(days=age),
        )
    # Written by hand, not by the services: count them into the roll-ups.
    rollups.activity_rebuild()


@pytest.mark.django_db
def test_activity_counts_decisions_agreement_and_rewards_per_window(known_activity):
    rows = {
        row.policy.name: row
        for row in selectors.policy_activity(since=timezone.now() - timedelta(days=1))
    }

    v1, v2 = rows["egreedy-v1"], rows["egreedy-v2"]
    assert (v1.last_day.decisions, v1.all_time.decisions) == (3, 4)
    assert (v2.last_day.decisions, v2.all_time.decisions) == (4, 5)
    # The lone shadow decision has no active pick to agree with.
    assert (v2.last_day.agreed, v2.last_day.compared) == (2, 3)
    assert (v2.all_time.agreed, v2.all_time.compared) == (3, 4)
    assert v2.all_time.agreement == 0.75
    assert (v1.last_day.rewards, v1.last_day.mean_reward) == (1, 1.0)
    assert (v1.all_time.rewards, v1.all_time.mean_reward) == (2, 0.25)
    assert rows["linucb-v1"].all_time.decisions == 0
    assert rows["linucb-v1"].all_time.mean_reward is None


@pytest.mark.django_db
def test_the_control_room_shows_them_in_a_fixed_number_of_queries(
    client, staff_user, known_activity, django_assert_max_num_queries
):
    client.force_login(staff_user)
    # The tenth: each hybrid policy's current shared model, in one query.
    with django_assert_max_num_queries(11):
        page = client.get("/admin/policies/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "67%" in html and "75%" in html  # 2 of 3, 3 of 4
    assert "0.250" in html and "1.000" in html


def _toggle(client, policy: str, enabled: str, **extra):
    pk = Policy.objects.get(name=policy).pk
    return client.post(
        f"/admin/policies/policy/{pk}/toggle/", {"enabled": enabled, **extra}
    )


@pytest.mark.django_db
def test_the_switch_needs_a_post_and_the_change_permission(client, staff_user):
    pk = Policy.objects.get(name="egreedy-v2").pk
    viewer = get_user_model().objects.create_user(
        username="viewer", password="x" * 12, is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_policy"))
    client.force_login(viewer)

    assert client.get("/admin/policies/").status_code == 200
    assert 'role="switch"' not in client.get("/admin/policies/").content.decode()
    assert _toggle(client, "egreedy-v2", "on").status_code == 403

    client.force_login(staff_user)
    assert client.get(f"/admin/policies/policy/{pk}/toggle/").status_code == 405
    assert not Policy.objects.get(name="egreedy-v2").enabled
    assert not PolicyChange.objects.exists()


@pytest.mark.django_db
def test_the_switch_goes_back_only_to_a_page_of_this_site(client, staff_user):
    client.force_login(staff_user)

    response = _toggle(client, "egreedy-v2", "on", next="https://evil.example/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/policies/"
    assert Policy.objects.get(name="egreedy-v2").enabled


@pytest.mark.django_db
def test_the_active_policy_has_no_switch_and_says_so(client, staff_user):
    client.force_login(staff_user)

    page = client.get(_toggle(client, "egreedy-v1", "off")["Location"])

    assert "only a shadow has an on/off switch" in page.content.decode()
    assert Policy.objects.get(name="egreedy-v1").role == "active"
    assert not PolicyChange.objects.exists()


@pytest.mark.django_db
def test_reset_from_the_state_page_needs_the_permission(client, history):
    state = BanditState.objects.get(policy__name="egreedy-v1")
    viewer = get_user_model().objects.create_user(
        username="viewer", password="x" * 12, is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_banditstate"))
    client.force_login(viewer)

    page = client.get(f"/admin/policies/banditstate/{state.pk}/change/")
    assert "Reset this user" not in page.content.decode()
    response = client.post(f"/admin/policies/banditstate/{state.pk}/reset/")

    assert response.status_code == 403
    assert BanditState.objects.exists() and not PolicyChange.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/admin/policies/policy/x/promote/",
        "/admin/policies/policy/1/change/promote/",
        "/admin/policies/policy/999999/promote/",
    ],
)
def test_a_malformed_or_unknown_id_in_an_admin_action_is_a_404(client, staff_user, url):
    client.force_login(staff_user)
    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_a_shadow_value_is_estimated_from_the_active_policy_rewards():
    """egreedy-v2 (epsilon 0.1, two candidates) on three rewarded requests."""
    cases = (
        # active pick, its propensity, shadow estimates, reward
        ("a", 0.95, (0.9, 0.1), 1.0),  # the shadow's greedy pick too: 0.95
        ("b", 0.05, (0.9, 0.1), -1.0),  # the shadow's exploring pick: 0.05
        ("a", 0.95, (0.1, 0.9), 1.0),  # the shadow would rather b: 0.05
        ("a", 0.95, (0.9, 0.1), 5.0),  # two days old: outside the window
    )
    active = Policy.objects.get(name="egreedy-v1")
    for index, (pick, propensity, estimates, reward) in enumerate(cases):
        age = 2 if index == 3 else 0
        request = uuid.uuid4()
        decision = _decision(
            "egreedy-v1", request, pick, propensity=propensity, days_ago=age
        )
        _decision("egreedy-v2", request, "a", estimates=estimates, days_ago=age)
        Reward.objects.create(
            policy=active,
            user_id="u1",
            tip_id=pick,
            reward=reward,
            decision=decision,
            fingerprint="x",
            features=[0.0],
            created_at=timezone.now() - timedelta(days=age),
        )

    values = selectors.shadow_values(
        since=timezone.now() - timedelta(days=1),
        shadows=Policy.objects.filter(role="shadow"),
    )

    value = values[Policy.objects.get(name="egreedy-v2").id]
    w = [1.0, 1.0, 0.05 / 0.95]  # shadow's probability / active's propensity
    assert value.samples == 3 and value.matched == 3
    assert value.snips.value == pytest.approx(w[2] / sum(w), abs=1e-12)
    # DR: the shadow's value of its own policy on each request (0.86 on all
    # three) plus w times its error on the logged pick: 0.1, -1.1, 0.9.
    dr = (0.86 + 0.1 + 0.86 - 1.1 + 0.86 + w[2] * 0.9) / 3
    assert value.dr.value == pytest.approx(dr, abs=1e-12)
    assert value.effective_samples == pytest.approx(sum(w) ** 2 / (2 + w[2] ** 2))
    assert value.logged_mean == pytest.approx(1 / 3, abs=1e-12)
    assert not value.enough  # three samples
    for estimate in (value.snips, value.dr):
        assert estimate.low <= estimate.value <= estimate.high
    assert set(values) == {Policy.objects.get(name="egreedy-v2").id}


def _rewarded_requests(count: int, seed: int = 0) -> None:
    """``count`` requests where egreedy-v1 (active) picked and was rewarded and
    egreedy-v2 (shadow) scored the same two candidates."""
    rng = np.random.default_rng(seed)
    active = Policy.objects.get(name="egreedy-v1")
    for _ in range(count):
        request = uuid.uuid4()
        explored = rng.random() < 0.1
        pick = "b" if explored else "a"
        decision = _decision(
            "egreedy-v1", request, pick, propensity=0.05 if explored else 0.95
        )
        estimates = (0.6, 0.2) if rng.random() < 0.7 else (0.2, 0.6)
        _decision("egreedy-v2", request, "a", estimates=estimates)
        Reward.objects.create(
            policy=active,
            user_id="u1",
            tip_id=pick,
            reward=float(rng.choice([1.0, -1.0, 0.1])),
            decision=decision,
            fingerprint="x",
            features=[0.0],
        )


def _off_policy_cells(html: str) -> list[str]:
    return re.findall(r'<td class="oo-num oo-off-policy"[^>]*>(.*?)</td>', html)


@pytest.mark.django_db
def test_the_control_room_shows_snips_and_dr_with_stable_intervals(client, staff_user):
    _rewarded_requests(200)
    services.shadow_values_refresh()
    client.force_login(staff_user)

    html = client.get("/admin/policies/").content.decode()

    value = selectors.shadow_values(
        since=timezone.now() - timedelta(days=1),
        shadows=Policy.objects.filter(role="shadow"),
    )[Policy.objects.get(name="egreedy-v2").id]
    assert value.enough and value.samples == 200
    cells = _off_policy_cells(html)
    assert len(cells) == 2  # SNIPS and DR of the one shadow
    for cell, estimate in zip(cells, (value.snips, value.dr), strict=True):
        assert cell.startswith(f"{estimate.value:.3f}")
        assert f"[{estimate.low:.3f}, {estimate.high:.3f}]</div>" in cell
        assert estimate.low < estimate.value < estimate.high
    assert f'200 <span class="oo-quiet">({value.effective_samples:.0f})' in html
    assert re.search(r'class="oo-quiet oo-computed-at"><time [^>]*>just now<', html)
    # Seeded: the same log shows the same intervals.
    services.shadow_values_refresh()
    assert _off_policy_cells(client.get("/admin/policies/").content.decode()) == cells


@pytest.mark.django_db
def test_the_control_room_says_not_enough_data_below_the_minimum(client, staff_user):
    _rewarded_requests(10)
    services.shadow_values_refresh()
    client.force_login(staff_user)

    html = client.get("/admin/policies/").content.decode()

    assert _off_policy_cells(html) == []
    assert "not enough data" in html
    assert '10 <span class="oo-quiet">(' in html


def _stored(policy: Policy) -> stats.OffPolicyEvidence | None:
    return ShadowValue.objects.get(policy=policy).evidence


@pytest.mark.django_db
def test_the_stored_value_is_the_one_computed_from_the_log():
    _rewarded_requests(120, seed=3)
    shadow = Policy.objects.get(name="egreedy-v2")
    now = timezone.now()

    rows = services.shadow_values_refresh(now=now)

    (row,) = [r for r in rows if r.policy == shadow]
    direct = selectors.shadow_values(since=now - timedelta(days=1), shadows=[shadow])
    assert row.policy == shadow and row.since == now - timedelta(days=1)
    assert row.computed_at == now and row.seconds > 0
    assert _stored(shadow) == direct[shadow.id]  # every field, exactly
    # One row per shadow (hybrid-v1 is one too, switched off, with no sample).
    assert ShadowValue.objects.count() == Policy.objects.filter(role="shadow").count()


@pytest.mark.django_db
def test_a_refresh_replaces_the_value_and_forgets_former_shadows():
    _rewarded_requests(60, seed=4)
    shadow = Policy.objects.get(name="egreedy-v2")
    services.shadow_values_refresh()
    first = _stored(shadow)
    _rewarded_requests(60, seed=5)

    services.shadow_values_refresh()

    assert ShadowValue.objects.filter(policy=shadow).count() == 1
    assert _stored(shadow).samples == 120 != first.samples
    Policy.objects.filter(id=shadow.id).update(role="retired")
    rows = services.shadow_values_refresh()
    assert shadow not in {row.policy for row in rows}
    assert not ShadowValue.objects.filter(policy=shadow).exists()


@pytest.mark.django_db
def test_a_shadow_with_no_sample_stores_that_it_has_none(client, staff_user):
    shadow = Policy.objects.get(name="egreedy-v2")

    rows = services.shadow_values_refresh()

    (row,) = [r for r in rows if r.policy == shadow]
    assert row.samples == 0 and row.snips is None and _stored(shadow) is None
    client.force_login(staff_user)
    html = client.get("/admin/policies/").content.decode()
    assert "oo-computed-at" in html and "not computed yet" not in html


@pytest.mark.django_db
def test_the_control_room_reads_the_stored_value_and_never_computes_one(
    client, staff_user, monkeypatch
):
    _rewarded_requests(200)
    client.force_login(staff_user)
    before = client.get("/admin/policies/").content.decode()
    assert "not computed yet" in before and _off_policy_cells(before) == []
    services.shadow_values_refresh()
    Reward.objects.all().delete()  # the log moves on; the page shows what beat saw

    def refuse(**kwargs):
        raise AssertionError("the control room computed an off-policy value")

    monkeypatch.setattr(selectors, "shadow_values", refuse)
    monkeypatch.setattr(stats, "off_policy_evidence", refuse)
    html = client.get("/admin/policies/").content.decode()

    assert len(_off_policy_cells(html)) == 2 and "not computed yet" not in html


@pytest.mark.django_db
def test_beat_refreshes_the_values_by_name(settings):
    from policies.tasks import refresh_shadow_values

    _rewarded_requests(60, seed=6)
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-shadow-values"]
    assert entry["task"] == refresh_shadow_values.name
    assert entry["schedule"] == settings.SHADOW_VALUE_SECONDS

    assert refresh_shadow_values() == Policy.objects.filter(role="shadow").count()
    assert _stored(Policy.objects.get(name="egreedy-v2")).samples == 60
