"""Every admin page of ours in a real Chromium at 1280 px, on a live server with
a little of everything: nothing scrolls sideways, and numbers, names and times
read as a person would write them.

With ``OO_ML_SCREENSHOTS=DIR`` the pages the README shows are saved there as
PNGs (``make screenshots`` writes docs/screenshots/).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page
from rest_framework.test import APIClient

from oo_ml.auth import service_token_create
from policies import services
from policies.models import BanditState, Decision, Policy, PolicyChange
from profiles.models import Event, Profile
from simulations.models import Run

pytestmark = pytest.mark.usefixtures("registry")

WIDTH = 1280
USERS = ("alice", "bob")
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
    """Decisions, rewards and events for two users, as the recommender sends them."""
    api = APIClient()
    api.credentials(
        HTTP_AUTHORIZATION=f"Token {service_token_create(name='recommender')}"
    )
    for user_id in USERS:
        for round_ in range(6):
            body = {
                "user_id": user_id,
                "candidates": CANDIDATES,
                "context": {"hour_of_day": 9 + round_, "day_of_week": 2},
            }
            decision = api.post("/score", body, format="json").json()
            kind = "done" if round_ % 2 else "dismissed"
            answer = api.post(
                "/events",
                {
                    "user_id": user_id,
                    "tip_id": decision["tip_id"],
                    "kind": kind,
                    "dwell_ms": 45_000,
                    "decision_id": decision["decision_id"],
                    "event_id": f"{kind}-{decision['decision_id']}",
                },
                format="json",
            )
            assert answer.status_code == 200, answer.json()


def _simulation_and_promotion() -> Run:
    """A decisive run of egreedy-v2 beside egreedy-v1, a promotion and its rollback."""
    from policies.tests.test_promotion_api import simulate, with_means
    from simulations.selectors import promotion_evidence

    run = with_means(simulate(n_users=10, n_rounds=20), egreedy_v1=0.3, egreedy_v2=0.4)
    ops = get_user_model().objects.get(username="ops")
    services.policy_promote(
        name="egreedy-v2", actor=ops, evidence_for=promotion_evidence
    )
    services.policy_rollback(actor=ops)
    return run


@pytest.fixture
def world(admin_page) -> dict:
    _traffic()
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
    admin = "/admin"
    return {
        "control-room": f"{admin}/policies/",
        "policy-list": f"{admin}/policies/policy/",
        "policy": f"{admin}/policies/policy/{v1.pk}/change/",
        "promote": f"{admin}/policies/policy/{v2.pk}/promote/",
        "states": f"{admin}/policies/banditstate/?q=alice",
        "user-state": f"{admin}/policies/banditstate/{state.pk}/change/",
        "decisions": f"{admin}/policies/decision/",
        "decision": f"{admin}/policies/decision/{decision.pk}/change/",
        "rewards": f"{admin}/policies/reward/",
        "history": f"{admin}/policies/policychange/",
        "change": f"{admin}/policies/policychange/{change.pk}/change/",
        "events": f"{admin}/profiles/event/",
        "event": f"{admin}/profiles/event/{event.pk}/change/",
        "profiles": f"{admin}/profiles/profile/",
        "profile": f"{admin}/profiles/profile/{profile.pk}/change/",
        "simulations": f"{admin}/simulations/",
        "runs": f"{admin}/simulations/run/",
        "run": f"{admin}/simulations/run/{run.pk}/change/",
    }


# How far the page, or any box of it that scrolls on its own, is wider than
# what shows: 0 when nothing needs a sideways scroll.
OVERFLOW = """() => {
  const root = document.documentElement;
  const worst = [[root.scrollWidth - root.clientWidth, "the page"]];
  for (const el of document.querySelectorAll("body *")) {
    const x = getComputedStyle(el).overflowX;
    if ((x === "auto" || x === "scroll") && el.scrollWidth > el.clientWidth + 1) {
      worst.push([el.scrollWidth - el.clientWidth, el.className || el.tagName]);
    }
  }
  worst.sort((a, b) => b[0] - a[0]);
  return worst[0];
}"""


def _overflow(page: Page) -> tuple[int, str]:
    excess, where = page.evaluate(OVERFLOW)
    return excess, where


def test_no_admin_page_of_ours_scrolls_sideways_at_1280_px(admin_page, world):
    page = admin_page
    wide = {}
    shots = os.environ.get("OO_ML_SCREENSHOTS")
    for name, url in _pages(world["run"]).items():
        response = page.goto(url)
        assert response.status == 200, (name, url, response.status)
        excess, where = _overflow(page)
        if excess > 0:
            wide[name] = f"{excess} px too wide ({where})"
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{shots}/{name}.png", full_page=True)
    assert not wide, "; ".join(f"{k}: {v}" for k, v in wide.items())
