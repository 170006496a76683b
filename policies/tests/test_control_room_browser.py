"""The control room and a user's state page in a real Chromium, on a live server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from rest_framework.test import APIClient

from oo_ml.auth import service_token_create
from policies.models import BanditState, ChangeAction, Decision, Policy, PolicyChange

pytestmark = pytest.mark.usefixtures("registry")


def _score_and_reward(user_id: str) -> None:
    api = APIClient()
    token = service_token_create(name="recommender")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    for _ in range(3):
        decision = api.post(
            "/score",
            {"user_id": user_id, "candidates": [{"id": "a"}, {"id": "b"}]},
            format="json",
        ).json()
        api.post(
            "/reward",
            {
                "user_id": user_id,
                "tip_id": decision["tip_id"],
                "reward": 1.0,
                "decision_id": decision["decision_id"],
            },
            format="json",
        )


def test_one_click_turns_a_shadow_on_and_off_and_the_history_says_who(admin_page):
    page = admin_page
    page.goto("/admin/policies/")
    row = page.locator("#policy-egreedy-v2")
    scores = "egreedy-v2 scores in shadow"
    switch = row.get_by_role("switch", name=scores)
    expect(switch).to_have_attribute("aria-checked", "false")
    expect(row.get_by_role("cell", name="Active")).to_have_count(0)
    expect(page.locator("#policy-egreedy-v1")).to_contain_text("Active")

    switch.click()

    expect(page.locator(".messagelist")).to_contain_text("Shadow egreedy-v2 is on")
    switch = page.locator("#policy-egreedy-v2").get_by_role("switch", name=scores)
    expect(switch).to_have_attribute("aria-checked", "true")
    assert Policy.objects.get(name="egreedy-v2").enabled
    history = page.locator("#history")
    expect(history).to_contain_text("shadow turned on")
    expect(history).to_contain_text("ops")

    switch.click()

    expect(switch).to_have_attribute("aria-checked", "false")
    assert not Policy.objects.get(name="egreedy-v2").enabled
    expect(history.locator("tbody tr").first).to_contain_text("shadow turned off")
    changes = PolicyChange.objects.filter(action=ChangeAction.TOGGLE)
    assert [c.after["enabled"] for c in changes] == [False, True]  # newest first
    assert {c.actor_name for c in changes} == {"ops"}

    # Each entry links to a page of its own.
    history.get_by_role("link", name=re.compile("^#")).first.click()
    expect(page.locator("#content")).to_contain_text("Shadow toggled")


def test_one_click_stops_and_restarts_a_policy_learning_from_live_rewards(
    admin_page,
):
    page = admin_page
    page.goto("/admin/policies/")
    learns = page.locator("#policy-egreedy-v2").get_by_role(
        "switch", name="egreedy-v2 learns from live rewards"
    )
    expect(learns).to_have_attribute("aria-checked", "true")  # a shadow's default
    # The retired policy learns nothing, and says so.
    expect(
        page.locator("#policy-linucb-v1").get_by_role(
            "switch", name="linucb-v1 learns from live rewards"
        )
    ).to_have_attribute("aria-checked", "false")

    learns.click()

    expect(page.locator(".messagelist")).to_contain_text(
        "Learning from live rewards is off for egreedy-v2"
    )
    expect(learns).to_have_attribute("aria-checked", "false")
    assert not Policy.objects.get(name="egreedy-v2").learns_live
    expect(page.locator("#history")).to_contain_text(
        "learning from live rewards turned off"
    )

    learns.click()

    expect(learns).to_have_attribute("aria-checked", "true")
    changes = PolicyChange.objects.filter(action=ChangeAction.LEARNING)
    assert [c.after["learns_live"] for c in changes] == [True, False]
    assert {c.actor_name for c in changes} == {"ops"}


def test_a_user_state_page_shows_theta_and_why_each_pick_won_and_resets(
    admin_page,
):
    _score_and_reward("u-42")
    page = admin_page
    page.goto("/admin/policies/")
    page.get_by_label("One user's state").fill("u-42")
    page.get_by_role("button", name="Open").click()
    # Every policy that learned: the active one, and the shadows learning live.
    expect(page.get_by_role("link", name="u-42")).to_have_count(3)
    page.get_by_role("row", name=re.compile("egreedy-v1")).get_by_role(
        "link", name="u-42"
    ).click()

    content = page.locator("#content")
    expect(content).to_contain_text("Weights θ = A⁻¹b")
    expect(content).to_contain_text("hour_sin")
    why = page.locator(".oo-why")
    expect(why).to_have_count(3)
    expect(why.first).to_contain_text("Estimate θ·x")
    expect(why.first.locator("tr.oo-picked")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reset this user").click()

    expect(page.locator(".messagelist")).to_contain_text("User u-42 reset")
    assert not BanditState.objects.filter(user_id="u-42").exists()
    assert not Decision.objects.filter(user_id="u-42").exists()
    changes = PolicyChange.objects.filter(action=ChangeAction.RESET)
    assert {(c.actor_name, c.user_id) for c in changes} == {("ops", "u-42")}
    # Both policies had learned the three rewards, egreedy-v2 from live rewards.
    assert {c.policy.name: c.before["reward_count"] for c in changes} == {
        "egreedy-v1": 3,
        "egreedy-v2": 3,
        "hybrid-v1": 3,
    }


def test_promote_shows_the_evidence_or_the_refusal_and_rollback_undoes_it(
    admin_page,
):
    from policies.tests.test_promotion_api import DECISIVE, SMALL, simulate

    page = admin_page
    page.goto("/admin/policies/")
    page.locator("#policy-egreedy-v2").get_by_role("link", name="Promote…").click()
    expect(page.locator("#refusal")).to_contain_text("No finished simulation ran")
    expect(page.locator("#promote-form")).to_have_count(0)
    expect(page.locator("#simulate-link")).to_have_attribute(
        "href", "/admin/simulations/?policies=egreedy-v1&policies=egreedy-v2"
    )

    small = simulate(**SMALL)
    page.reload()
    expect(page.locator("#refusal")).to_contain_text(
        "Inconclusive: In simulation " + str(small.id)
    )
    expect(page.locator("#verdict")).to_contain_text("inconclusive")
    expect(page.locator("#gate-chart")).to_have_class(re.compile("inconclusive"))
    expect(page.locator("#simulate-link")).to_have_attribute(
        "href", re.compile(r"policies=egreedy-v2&n_users=\d+$")
    )
    expect(page.locator("#promote-form")).to_have_count(0)

    decisive = simulate(**DECISIVE)
    page.reload()
    expect(page.locator("#difference")).to_contain_text("200 users")
    expect(page.locator("#difference")).to_contain_text("[0.0094, 0.0277]")
    expect(page.locator("#gate-chart")).to_have_class(re.compile("pass"))
    expect(
        page.get_by_role("img", name=re.compile("^Shadow minus active"))
    ).to_be_visible()
    expect(page.locator("#evidence-run")).to_have_text(str(decisive.id))
    page.get_by_role("button", name="Promote egreedy-v2").click()

    expect(page.locator(".messagelist")).to_contain_text(
        "egreedy-v2 is now the active policy"
    )
    expect(page.locator("#policy-egreedy-v2")).to_contain_text("Active")
    latest = page.locator("#history tbody tr").first
    expect(latest).to_contain_text("promoted")
    expect(latest.get_by_role("link", name="evidence: simulation")).to_have_attribute(
        "href", re.compile(r"/admin/simulations/run/[0-9a-f-]+/change/")
    )
    expect(latest).to_contain_text("[0.0094, 0.0277] over 200 users, pass")
    assert Policy.objects.get(role="active").name == "egreedy-v2"

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back: make egreedy-v1 active again").click()

    expect(page.locator(".messagelist")).to_contain_text("egreedy-v1 is active again")
    expect(page.locator("#rollback")).to_have_count(0)
    assert Policy.objects.get(role="active").name == "egreedy-v1"
    assert list(PolicyChange.objects.values_list("action", flat=True)) == [
        ChangeAction.ROLLBACK,
        ChangeAction.PROMOTE,
    ]
