"""Every admin page of ours in a real Chromium at 1280 px, on a live server with
a little of everything: nothing scrolls sideways, and numbers, names and times
read as a person would write them.

With ``OO_ML_SCREENSHOTS=DIR`` the pages the README shows are saved there as
PNGs (``make screenshots`` writes docs/screenshots/).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect
from rest_framework.test import APIClient

from generation.models import Generation
from oo_ml.auth import service_token_create
from oo_ml.models import ApiToken
from policies import services
from policies.models import BanditState, Decision, Policy, PolicyChange, Reward
from profiles.models import Event, Profile
from simulations.models import JudgeAnswer, Run

pytestmark = pytest.mark.usefixtures("registry")

WIDTH = 1280
SHOWN = ("control-room", "run", "user-state")  # in the README, as screenshots
USERS = ("alice", "bob", "carol")
ROUNDS = 20
CANDIDATES = [
    {
        "id": "task-7f3a9c21",
        "content": "File taxes",
        "source": "todo",
        "features": {"is_overdue": True, "priority": 4, "task_age_days": 12},
    },
    {
        "id": "task-0b5e44d8",
        "content": "Water plants",
        "source": "todo",
        "features": {"is_overdue": False, "priority": 1, "task_age_days": 0.5},
    },
    {
        "id": "task-c2d19e07",
        "content": "Call the bank",
        "source": "todo",
        "features": {"is_overdue": False, "priority": 3, "task_age_days": 3},
    },
]


def _traffic() -> None:
    """Decisions, rewards and events for a few users, as the recommender sends
    them, with egreedy-v2 scoring in shadow; then the hybrid's first refit."""
    services.policy_toggle(name="egreedy-v2", actor=None, enabled=True)
    api = APIClient()
    api.credentials(
        HTTP_AUTHORIZATION=f"Token {service_token_create(name='recommender')}"
    )
    for user_id in USERS:
        for round_ in range(ROUNDS):
            body = {
                "user_id": user_id,
                "candidates": CANDIDATES,
                "context": {"hour_of_day": 8 + round_ % 12, "day_of_week": 2},
            }
            decision = api.post("/score", body, format="json").json()
            kind = "done" if round_ % 2 else "dismissed"
            answer = api.post(
                "/events",
                {
                    "user_id": user_id,
                    "tip_id": decision["tip_id"],
                    "kind": kind,
                    # Done in 2.5 minutes is +0.6: sums of it carry binary
                    # noise (-3.9999999999999996) for the pages to round.
                    "dwell_ms": 150_000,
                    "decision_id": decision["decision_id"],
                    "event_id": f"{kind}-{decision['decision_id']}",
                },
                format="json",
            )
            assert answer.status_code == 200, answer.json()
    services.shared_models_refit()


def _simulation_and_promotion() -> Run:
    """A decisive run of egreedy-v2 beside egreedy-v1, a promotion and its rollback."""
    from policies.tests.test_promotion_api import DECISIVE, simulate
    from simulations.selectors import promotion_evidence

    run = simulate(**DECISIVE)
    ops = get_user_model().objects.get(username="ops")
    services.policy_promote(
        name="egreedy-v2", actor=ops, evidence_for=promotion_evidence
    )
    services.policy_rollback(actor=ops)
    return run


def _llm_records() -> None:
    """What the LLM parts keep, as they keep it: a tip written for a decision,
    and one answer of the llm judge with the prompt that asked it."""
    from simulations import llm_judge, personas
    from simulations.services import judge_answers_put

    decision = Decision.objects.filter(user_id="alice").first()
    Generation.objects.create(
        user_id="alice",
        task_id=decision.tip_id,
        decision_id=decision.pk,
        prompt_version="v1",
        model="qwen2.5-7b-instruct",
        text="Your taxes are 12 days overdue: an hour this morning settles them.",
    )
    messages = llm_judge.messages_for(
        personas.PERSONAS[0], hour=9, overdue=True, band=2, priority=4
    )
    key = llm_judge.prompt_key(model="qwen2.5-7b-instruct", messages=messages)
    judge_answers_put(
        asked=[llm_judge.Asked(key, messages, '{"kind": "done", "dwell_s": 240}')],
        model="qwen2.5-7b-instruct",
        prompt_version=llm_judge.PROMPT_VERSION,
    )


@pytest.fixture
def world(admin_page) -> dict:
    _traffic()
    _llm_records()
    run = _simulation_and_promotion()
    admin_page.set_viewport_size({"width": WIDTH, "height": 900})
    return {"run": run}


def _pages(run: Run) -> dict[str, str]:
    """Every admin page of ours, by a short name."""
    v1 = Policy.objects.get(name="egreedy-v1")
    v2 = Policy.objects.get(name="egreedy-v2")
    state = BanditState.objects.get(policy=v1, user_id="alice")
    decision = Decision.objects.filter(user_id="alice").first()
    change = PolicyChange.objects.first()
    event = Event.objects.first()
    profile = Profile.objects.get(user_id="alice")
    reward = Reward.objects.filter(user_id="alice").first()
    generation = Generation.objects.get()
    answer = JudgeAnswer.objects.get()
    token = ApiToken.objects.first()
    admin = "/admin"
    return {
        "index": f"{admin}/",
        "control-room": f"{admin}/policies/",
        "policy-list": f"{admin}/policies/policy/",
        "policy": f"{admin}/policies/policy/{v1.pk}/change/",
        "promote": f"{admin}/policies/policy/{v2.pk}/promote/",
        "states": f"{admin}/policies/banditstate/?q=alice",
        "user-state": f"{admin}/policies/banditstate/{state.pk}/change/",
        "decisions": f"{admin}/policies/decision/",
        "decision": f"{admin}/policies/decision/{decision.pk}/change/",
        "rewards": f"{admin}/policies/reward/",
        "reward": f"{admin}/policies/reward/{reward.pk}/change/",
        "history": f"{admin}/policies/policychange/",
        "change": f"{admin}/policies/policychange/{change.pk}/change/",
        "events": f"{admin}/profiles/event/",
        "event": f"{admin}/profiles/event/{event.pk}/change/",
        "profiles": f"{admin}/profiles/profile/",
        "profile": f"{admin}/profiles/profile/{profile.pk}/change/",
        "simulations": f"{admin}/simulations/",
        "runs": f"{admin}/simulations/run/",
        "run": f"{admin}/simulations/run/{run.pk}/change/",
        # The prompt versions with their mean reward, above the generated tips.
        "generations": f"{admin}/generation/generation/",
        "generation": f"{admin}/generation/generation/{generation.pk}/change/",
        "judge-answers": f"{admin}/simulations/judgeanswer/",
        "judge-answer": f"{admin}/simulations/judgeanswer/{answer.pk}/change/",
        "tokens": f"{admin}/oo_ml/apitoken/",
        "token-add": f"{admin}/oo_ml/apitoken/add/",
        "token": f"{admin}/oo_ml/apitoken/{token.pk}/change/",
    }


# How far the page, any box of it that scrolls on its own, or any table beyond
# its panel, is wider than what shows: 0 when nothing needs a sideways scroll.
OVERFLOW = """() => {
  const root = document.documentElement;
  const worst = [[root.scrollWidth - root.clientWidth, "the page"]];
  for (const el of document.querySelectorAll("body *")) {
    const x = getComputedStyle(el).overflowX;
    if ((x === "auto" || x === "scroll") && el.scrollWidth > el.clientWidth + 1) {
      worst.push([el.scrollWidth - el.clientWidth, el.className || el.tagName]);
    }
  }
  // A table wider than its panel spills over it, even when the page does not scroll.
  for (const table of document.querySelectorAll("#content table")) {
    const panel = table.parentElement.closest(".module, .results, #content-main");
    if (panel === null) continue;
    const right = (el) => el.getBoundingClientRect().right;
    const spill = Math.round(right(table) - right(panel));
    if (spill > 1) worst.push([spill, "a table in " + (panel.id || panel.className)]);
  }
  worst.sort((a, b) => b[0] - a[0]);
  return worst[0];
}"""


def _overflow(page: Page) -> tuple[int, str]:
    excess, where = page.evaluate(OVERFLOW)
    return excess, where


def test_no_admin_page_of_ours_scrolls_sideways_at_1280_px(admin_page, world):
    page = admin_page
    missing = []  # a favicon, a stylesheet: nothing a page asks for is a 404
    page.on("response", lambda r: r.status == 404 and missing.append(r.url))
    wide = {}
    shots = os.environ.get("OO_ML_SCREENSHOTS")
    for name, url in _pages(world["run"]).items():
        response = page.goto(url)
        assert response.status == 200, (name, url, response.status)
        excess, where = _overflow(page)
        if excess > 0:
            wide[name] = f"{excess} px too wide ({where})"
        if shots and name in SHOWN:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{shots}/{name}.png", full_page=True)
    assert not wide, "; ".join(f"{k}: {v}" for k, v in wide.items())
    assert missing == []


TIME = re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}:\d{2}$")


def _column(page: Page, field: str) -> list[str]:
    return page.locator(f"#result_list td.field-{field}").all_inner_texts()


def test_names_numbers_and_times_read_as_a_person_writes_them(admin_page, world):
    page = admin_page
    pages = _pages(world["run"])

    page.goto(pages["control-room"])
    expect(page.locator("#legend")).to_contain_text("· does not apply")
    expect(page.locator("#legend")).to_contain_text("— nothing to show yet")
    expect(page.locator("#history tbody tr").first).to_contain_text("just now")
    expect(page.locator("#content")).not_to_contain_text("minutes ago")

    # A title names the policy, never its number.
    page.goto(pages["change"])
    expect(page.locator("#content h2").first).to_have_text(
        "Rolled back: egreedy-v1 by ops"
    )
    page.goto(pages["decision"])
    expect(page.locator("#content h2").first).to_have_text(
        re.compile(r"^egreedy-v[12] picked task-\w+ for alice$")
    )
    # Four significant digits: 0.9333, or 0.03333 for an exploring pick.
    expect(page.locator(".field-propensity_shown .readonly")).to_have_text(
        re.compile(r"^(1|0\.0*[1-9]\d{0,3})$")
    )

    # The decisions: times to the second, four significant digits, and the
    # decision's role alone.
    page.goto(pages["decisions"])
    times = (
        _column(page, "created_at")
        or page.locator("#result_list th.field-created_at").all_inner_texts()
    )
    assert times and all(TIME.match(t) for t in times), times
    for column in ("score_shown", "propensity_shown"):
        for text in _column(page, column):
            digits = text.lstrip("-0.").replace(".", "")
            assert len(digits) <= 4, (column, text)
    rows = zip(_column(page, "policy_name"), _column(page, "role"), strict=True)
    assert set(rows) == {("egreedy-v1", "Active"), ("egreedy-v2", "Shadow")}

    # The events: short ids on one line.
    page.goto(pages["events"])
    for text in _column(page, "decision_link") + _column(page, "short_event_id"):
        assert len(text) <= 9, text
    heights = page.locator("#result_list tbody tr").evaluate_all(
        "rows => rows.map(row => row.getBoundingClientRect().height)"
    )
    assert max(heights) < 2.5 * min(heights)  # none wraps over three lines

    # The promote page: the evidence's time as every other time.
    page.goto(pages["promote"])
    expect(page.locator("#evidence-finished")).to_have_text(TIME)

    # A user's state: links to the profile and the events, the candidates'
    # features, and a search lists the policies without state too.
    page.goto(pages["user-state"])
    expect(page.locator(".field-cumulative_reward_shown .readonly")).to_have_text(
        re.compile(r"^-?\d+(\.\d{1,4})?$")
    )
    expect(page.locator("#user-profile")).to_have_attribute(
        "href", "/admin/profiles/profile/?q=alice"
    )
    page.locator("#user-events").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(ROUNDS)
    page.go_back()
    why = page.locator(".oo-why").first
    expect(why.locator("tbody tr").first).to_contain_text("12")  # task age
    expect(why).to_contain_text(re.compile(r"propensity 0\.0*[1-9]\d{0,3}\s"))
    page.locator("#user-states").click()
    expect(page.locator("#no-state")).to_contain_text("linucb-v1")
    expect(page.locator("#no-state")).to_contain_text("no state yet")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    sums = _column(page, "cumulative_reward_shown")
    assert sums and all(re.fullmatch(r"-?\d+(\.\d{1,4})?", t) for t in sums), sums


def test_the_site_s_front_page_links_the_admin_the_api_docs_and_health(
    chromium, live_server
):
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    missing = []
    page.on("response", lambda r: r.status >= 400 and missing.append(r.url))

    page.goto("/")

    expect(page.get_by_role("link", name="The admin")).to_have_attribute(
        "href", "/admin/"
    )
    expect(page.get_by_role("link", name="The API docs")).to_have_attribute(
        "href", "/api/docs/"
    )
    page.get_by_role("link", name="/health").click()
    expect(page.locator("body")).to_contain_text('"database":true')
    assert missing == []
    icon = page.request.get(f"{live_server.url}/favicon.ico")
    assert icon.ok and icon.headers["content-type"].startswith("image/svg")
    context.close()
