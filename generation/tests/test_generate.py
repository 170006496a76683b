"""POST /generate end to end: real HTTP to a local OpenAI-compatible server, the
prompt registry, the tips stored with their version, the reward per version."""

from __future__ import annotations

import itertools
import json

import pytest
from django.core.checks import run_checks

from generation import prompts
from generation.models import Generation
from generation.selectors import prompt_version_rewards
from oo_ml import llm
from oo_ml.tests.llm_server import MODEL, Reply, chat

pytestmark = pytest.mark.django_db

TASK = {
    "id": "t1",
    "content": "File taxes",
    "source": "todo",
    "features": {"is_overdue": True, "priority": 4, "task_age_days": 12},
}
BODY = {"user_id": "u42", "task": TASK}


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch):
    monkeypatch.setattr(llm, "BACKOFF_SECONDS", 0.01)


def writer(body: dict) -> Reply:
    """Answers by the prompt it was sent: each version's tips differ."""
    system = body["messages"][0]["content"]
    if "Start with why now" in system:
        return chat("  It is overdue and urgent: file your taxes now.\n")
    return chat('"Ready to file your taxes? It only takes a moment."')


def generate(api, body):
    return api.post("/generate", body, format="json")


def test_a_tip_with_the_default_version_is_written_and_stored(api, fake_llm):
    server = fake_llm(writer)
    response = generate(api, BODY)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["text"] == "Ready to file your taxes? It only takes a moment."
    assert (answer["prompt_version"], answer["model"]) == ("v1", MODEL)
    tip = Generation.objects.get()
    assert str(tip.id) == answer["generation_id"]
    assert (tip.user_id, tip.task_id, tip.prompt_version, tip.model) == (
        "u42",
        "t1",
        "v1",
        MODEL,
    )
    assert tip.decision_id is None and tip.text == answer["text"]
    (sent,) = server.requests
    v1 = prompts.PROMPTS["v1"]
    assert sent["messages"][0] == {"role": "system", "content": v1.system}
    assert sent["messages"][1]["content"] == (
        "The task: File taxes\nFrom: todo\n"
        "Details: priority 4 of 4 (4 is urgent), overdue, added 12 days ago"
    )
    assert (sent["temperature"], sent["max_tokens"]) == (0.7, 120)


def test_the_request_version_then_the_setting_decide(api, fake_llm, settings):
    fake_llm(writer)
    named = generate(api, {**BODY, "prompt_version": "v2-urgency"}).json()
    assert named["prompt_version"] == "v2-urgency"
    assert named["text"] == "It is overdue and urgent: file your taxes now."
    settings.PROMPT_VERSION = "v2-urgency"
    assert generate(api, BODY).json()["prompt_version"] == "v2-urgency"
    assert (
        generate(api, {**BODY, "prompt_version": "v1"}).json()["prompt_version"] == "v1"
    )
    assert list(
        Generation.objects.order_by("created_at").values_list(
            "prompt_version", flat=True
        )
    ) == ["v2-urgency", "v2-urgency", "v1"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({**BODY, "prompt_version": "v9"}, "prompt_version"),
        ({**BODY, "prompt_version": 1}, "prompt_version"),
        ({"task": TASK}, "user_id"),
        ({"user_id": "u42"}, "task"),
        ({"user_id": "u42", "task": "File taxes"}, "task"),
        ({"user_id": "u42", "task": {"content": "no id"}}, "task.id"),
        (
            {**BODY, "task": {**TASK, "features": {"priority": 9}}},
            "task.features.priority",
        ),
        ({**BODY, "decision_id": "not-a-uuid"}, "decision_id"),
        ({**BODY, "user_id": ""}, "user_id"),
    ],
)
def test_bad_input_is_400_asks_nothing_and_writes_nothing(api, fake_llm, body, field):
    server = fake_llm(writer)
    response = generate(api, body)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["detail"]
    assert server.count == 0 and not Generation.objects.exists()


def test_an_unknown_version_names_the_known_ones(api, fake_llm):
    fake_llm(writer)
    body = generate(api, {**BODY, "prompt_version": "v9"}).json()
    assert body["error"] == "unknown_prompt_version"
    assert body["detail"] == "No prompt version 'v9': one of v1, v2-urgency."


def test_malformed_json_is_400(api, fake_llm):
    fake_llm(writer)
    response = api.post("/generate", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


def test_no_token_is_401(anon, fake_llm):
    server = fake_llm(writer)
    response = anon.post("/generate", BODY, format="json")
    assert response.status_code == 401
    assert server.count == 0 and not Generation.objects.exists()


def test_without_an_llm_it_is_503_saying_why(api, settings):
    settings.LLM_BASE_URL = ""
    response = generate(api, BODY)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "llm_not_configured"
    assert "OO_ML_LLM_BASE_URL" in body["detail"]
    assert not Generation.objects.exists()


@pytest.mark.parametrize(
    "reply, words",
    [
        (Reply("overloaded", status=500), "answered 500, after 2 attempts"),
        (Reply(delay=1.0), "no answer within 0.2 s"),
        (Reply("<html>not json</html>"), "not JSON"),
        (Reply({"choices": [{"message": {}}]}), "not a chat completion"),
        (chat("   "), "empty text"),
        (chat("x" * 1001), "over the 1,000 a tip may have"),
    ],
)
def test_an_llm_that_cannot_answer_is_503_and_stores_nothing(
    api, fake_llm, reply, words
):
    fake_llm(lambda body: reply, timeout=0.2, retries=1)
    response = generate(api, BODY)
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "llm_unavailable"
    assert words in response.json()["detail"]
    assert not Generation.objects.exists()


def test_500s_then_an_answer_is_200(api, fake_llm):
    replies = itertools.chain([Reply("oops", status=502)] * 2, itertools.repeat(None))
    server = fake_llm(lambda body: next(replies) or writer(body), retries=2)
    assert generate(api, BODY).status_code == 200
    assert server.count == 3


def score(api, user_id: str = "u42") -> dict:
    response = api.post(
        "/score",
        {"user_id": user_id, "candidates": [TASK]},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def reward(api, decision: dict, value: float, user_id: str = "u42") -> None:
    response = api.post(
        "/reward",
        {
            "user_id": user_id,
            "tip_id": decision["tip_id"],
            "reward": value,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )
    assert response.status_code == 200, response.content


def test_a_tip_for_a_decision_must_be_its_pick_for_its_user(api, fake_llm):
    server = fake_llm(writer)
    decision = score(api)
    ok = generate(api, {**BODY, "decision_id": decision["decision_id"]})
    assert ok.status_code == 200
    assert str(Generation.objects.get().decision_id) == decision["decision_id"]

    other_user = generate(
        api, {**BODY, "user_id": "u7", "decision_id": decision["decision_id"]}
    )
    assert other_user.status_code == 400
    assert other_user.json()["field"] == "decision_id"
    unknown = generate(
        api, {**BODY, "decision_id": "0190a0a0-0000-7000-8000-000000000000"}
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "decision_id"
    assert server.count == 1 and Generation.objects.count() == 1


def test_the_mean_reward_per_prompt_version(api, fake_llm, client, staff_user):
    """Three decisions: two tips with v1 (rewards 1 and 0), one with v2 that a
    later v1 tip replaced (its reward counts for v1: the latest tip), and one
    with v2 (reward -1). A tip without a decision counts only as written."""
    fake_llm(writer)
    plan = [("v1", 1.0), ("v1", 0.0), ("v2-urgency", -1.0)]
    for version, value in plan:
        decision = score(api)
        body = {**BODY, "decision_id": decision["decision_id"]}
        generate(api, {**body, "prompt_version": version})
        reward(api, decision, value)
    generate(api, {**BODY, "prompt_version": "v2-urgency"})
    replaced = score(api)
    body = {**BODY, "decision_id": replaced["decision_id"]}
    generate(api, {**body, "prompt_version": "v2-urgency"})
    generate(api, {**body, "prompt_version": "v1"})
    reward(api, replaced, 0.5)

    rows = {row.prompt.version: row for row in prompt_version_rewards()}
    v1, v2 = rows["v1"], rows["v2-urgency"]
    assert (v1.tips, v1.with_decision, v1.rewards) == (3, 3, 3)
    assert v1.mean_reward == pytest.approx(0.5)
    assert (v2.tips, v2.with_decision, v2.rewards) == (3, 2, 1)
    assert v2.mean_reward == pytest.approx(-1.0)
    assert v1.pinned and v2.pinned

    client.force_login(staff_user)
    html = client.get("/admin/generation/generation/").content.decode()
    assert 'id="prompt-versions"' in html
    for version, mean in (("v1", "0.5000"), ("v2-urgency", "-1.0000")):
        row = html.split(f'data-version="{version}"')[1].split("</tr>")[0]
        assert f'<td data-field="mean-reward">{mean}</td>' in row
    assert f"/generate asks <code>{MODEL}</code>" in html


def test_the_admin_says_generate_is_off_without_an_llm(client, staff_user, settings):
    settings.LLM_BASE_URL = ""
    client.force_login(staff_user)
    html = client.get("/admin/generation/generation/").content.decode()
    assert "/generate is off.</strong> No LLM is configured" in html


def test_tips_are_read_only_in_the_admin(client, staff_user, api, fake_llm):
    fake_llm(writer)
    generate(api, BODY)
    tip = Generation.objects.get()
    client.force_login(staff_user)
    assert client.get("/admin/generation/generation/add/").status_code == 403
    page = client.get(f"/admin/generation/generation/{tip.pk}/change/")
    assert page.status_code == 200 and 'name="text"' not in page.content.decode()
    delete = client.post(
        f"/admin/generation/generation/{tip.pk}/delete/", {"post": "yes"}
    )
    assert delete.status_code == 403 and Generation.objects.exists()


def test_the_schema_documents_generate(staff_api):
    schema = json.loads(
        staff_api.get("/api/schema/", HTTP_ACCEPT="application/json").content
    )
    operation = schema["paths"]["/generate"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "503"}
    components = schema["components"]["schemas"]
    assert set(components["GenerateInput"]["required"]) == {"user_id", "task"}
    assert set(components["GenerateOutput"]["properties"]) == {
        "text",
        "prompt_version",
        "model",
        "generation_id",
    }


def test_a_changed_pinned_prompt_or_an_unknown_default_stops_start_up(
    monkeypatch, settings
):
    assert not [e for e in run_checks() if e.id.startswith("generation.")]
    changed = {
        **prompts.PROMPTS,
        "v1": prompts.Prompt(
            **{**_fields(prompts.PROMPTS["v1"]), "system": "Be brief."}
        ),
    }
    monkeypatch.setattr("generation.checks.PROMPTS", changed)
    settings.PROMPT_VERSION = "v3"
    ids = sorted(e.id for e in run_checks() if e.id.startswith("generation."))
    assert ids == ["generation.E002", "generation.E003"]


def _fields(prompt: prompts.Prompt) -> dict:
    import dataclasses

    return dataclasses.asdict(prompt)


def test_the_versions_page_needs_the_view_permission(client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(
        username="viewer", password="x" * 12, is_staff=True
    )
    client.force_login(user)
    assert client.get("/admin/generation/generation/").status_code == 403
    user.user_permissions.set(Permission.objects.filter(codename="view_generation"))
    assert client.get("/admin/generation/generation/").status_code == 200


def test_a_reward_inferred_from_an_event_counts_for_the_version(api, fake_llm):
    fake_llm(writer)
    decision = score(api)
    body = {**BODY, "decision_id": decision["decision_id"]}
    generate(api, {**body, "prompt_version": "v2-urgency"})
    event = api.post(
        "/events",
        {
            "user_id": "u42",
            "tip_id": "t1",
            "kind": "done",
            "dwell_ms": 60_000,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )
    assert event.status_code == 200, event.content
    assert event.json()["reward"] == 1.0
    v2 = {row.prompt.version: row for row in prompt_version_rewards()}["v2-urgency"]
    assert (v2.rewards, v2.mean_reward) == (1, 1.0)
