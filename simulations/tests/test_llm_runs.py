"""Runs with the llm judge, against a local OpenAI-compatible server over real
HTTP: runsim finishes and reports its fallbacks, reruns identically from the
cache (with the server gone), falls back to the rule judge's draws when the
model is too slow, and every way of starting a run refuses the judge when no LLM
is configured."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from oo_ml.tests.llm_server import MODEL, Reply, chat, last_user_message
from simulations.models import JudgeAnswer, Run, RunChunk, RunEvent

pytestmark = pytest.mark.django_db

ARGS = ["--policies", "egreedy-v1", "egreedy-v2", "--n-users", "10"]
ARGS += ["--n-rounds", "8", "--seed", "3", "--chunk-users", "4"]
EVENT_FIELDS = ("policy", "user_index", "round", "pick", "kind", "dwell_ms", "reward")


def persona_player(body: dict) -> Reply:
    """A stand-in model, the same answer for the same prompt: unusable at 13:00
    (not JSON) and 14:00 (another shape); else done for important tasks."""
    text = last_user_message(body)
    if "It is 13:00" in text:
        return chat("The user would most likely snooze this one.")
    if "It is 14:00" in text:
        return chat(json.dumps({"reaction": "done"}))
    important = re.search(r"priority [34] ", text)
    if important:
        dwell = 60_000 if ", overdue," in text else 30_000
        return chat(json.dumps({"reaction": "done", "dwell_ms": dwell}))
    return chat(json.dumps({"reaction": "dismissed", "dwell_ms": 4_000}))


def runsim(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("runsim", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def events_of(run: Run) -> list[tuple]:
    return list(
        RunEvent.objects.filter(run=run)
        .order_by("policy", "user_index", "round")
        .values_list(*EVENT_FIELDS)
    )


def test_runsim_with_the_llm_judge_reports_fallbacks_and_reruns_from_the_cache(
    fake_llm,
):
    server = fake_llm(persona_player)
    first, progress = runsim(*ARGS, "--judge", "llm")
    run = Run.objects.get()
    assert (run.judge, run.judge_model, run.judge_prompt_version) == (
        "llm",
        MODEL,
        "judge-v1",
    )
    asked = server.count
    assert asked == JudgeAnswer.objects.count() > 0
    judge = run.summary["judge"]
    unusable = RunEvent.objects.filter(run=run, hour__in=[13, 14]).count()
    assert unusable > 0
    assert judge["fallbacks_invalid"] == judge["fallbacks"] == unusable
    assert judge["reactions"] == 2 * 10 * 8
    assert judge["asked"] == asked and judge["fallbacks_unavailable"] == 0
    assert (
        f"llm judge: model {MODEL}, prompt judge-v1; {unusable} of 160 reactions "
        f"fell back to the rule judge's draw ({unusable} unusable answers, 0 "
        "without an answer)"
    ) in first
    assert f", {asked} asked of {MODEL}" in progress
    # What the model said is what the users did.
    answered = RunEvent.objects.filter(run=run).exclude(hour__in=[13, 14])
    assert {(e.kind, e.dwell_ms) for e in answered.filter(priority__gte=3)} <= {
        ("done", 30_000),
        ("done", 60_000),
    }
    assert {(e.kind, e.dwell_ms) for e in answered.filter(priority__lte=2)} == {
        ("dismissed", 4_000)
    }
    # Each request asked for a JSON object at temperature 0, of the set model.
    body = server.requests[0]
    assert (body["model"], body["temperature"]) == (MODEL, 0.0)
    assert body["response_format"] == {"type": "json_object"}

    server.stop()  # a rerun needs no model: every answer is kept
    second, progress = runsim(*ARGS, "--judge", "llm")
    assert second == first
    looked_up = judge["prompts"]
    assert f"{looked_up} answered from the cache, 0 asked of {MODEL}" in progress
    rerun = Run.objects.exclude(pk=run.pk).get()
    assert events_of(rerun) == events_of(run)
    assert RunChunk.objects.filter(run=rerun).count() == 3


def test_a_model_too_slow_falls_back_to_the_rule_judge_draws(fake_llm):
    """Every answer times out: each reaction is the rule judge's for the same
    (user, round), so the run equals the rule judge's run with that seed, and
    nothing is kept (a rerun asks again)."""
    fake_llm(lambda body: Reply(delay=1.0), timeout=0.2, retries=0)
    out, _ = runsim(*ARGS, "--judge", "llm")
    llm = Run.objects.get()
    assert "160 of 160 reactions fell back" in out
    assert "(0 unusable answers, 160 without an answer)" in out
    assert JudgeAnswer.objects.count() == 0
    runsim(*ARGS, "--judge", "rule")
    rule = Run.objects.exclude(pk=llm.pk).get()
    assert events_of(llm) == events_of(rule)


def test_runsim_refuses_the_llm_judge_without_an_llm(settings):
    settings.LLM_BASE_URL = ""
    with pytest.raises(CommandError, match="The llm judge is off. No LLM is config"):
        runsim(*ARGS, "--judge", "llm")
    assert not Run.objects.exists()


def test_the_api_refuses_the_llm_judge_without_an_llm_and_takes_it_with_one(
    settings, staff_api, fake_llm, monkeypatch
):
    from simulations import tasks

    monkeypatch.setattr(tasks.run_fan_out, "delay", lambda *args: None)
    body = {
        "policies": ["egreedy-v1"],
        "judge": "llm",
        "n_users": 3,
        "n_rounds": 2,
        "seed": 1,
    }
    settings.LLM_BASE_URL = ""
    refused = staff_api.post("/api/simulations", body, format="json")
    assert refused.status_code == 400
    assert refused.json()["field"] == "judge"
    assert "No LLM is configured" in refused.json()["detail"]
    assert not Run.objects.exists()

    fake_llm(persona_player)
    started = staff_api.post("/api/simulations", body, format="json")
    assert started.status_code == 202, started.content
    assert Run.objects.get().judge_model == MODEL
    answer = started.json()
    assert (answer["judge_model"], answer["judge_prompt_version"]) == (
        MODEL,
        "judge-v1",
    )


def test_the_admin_form_says_the_llm_judge_is_off_and_refuses_it(
    settings, client, staff_user
):
    settings.LLM_BASE_URL = ""
    client.force_login(staff_user)
    page = client.get("/admin/simulations/").content.decode()
    assert '<option value="llm">llm (off)</option>' in page
    assert "The llm judge is off. No LLM is configured" in page
    form = {
        "policies": ["egreedy-v1"],
        "judge": "llm",
        "n_users": "3",
        "n_rounds": "2",
        "seed": "1",
        "n_candidates": "5",
        "chunk_users": "3",
    }
    response = client.post("/admin/simulations/", form)
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r"field-judge.*?</fieldset>", html, re.S).group(0)
    assert re.search(r'class="errorlist".*No LLM is configured', row, re.S)
    assert not Run.objects.exists()


def test_the_run_page_shows_the_model_and_the_fallbacks(fake_llm, client, staff_user):
    fake_llm(persona_player)
    runsim(*ARGS, "--judge", "llm")
    run = Run.objects.get()
    client.force_login(staff_user)
    html = client.get(f"/admin/simulations/run/{run.pk}/change/").content.decode()
    assert f"model {MODEL}, prompt judge-v1" in html
    fallbacks = run.summary["judge"]["fallbacks"]
    assert f"{fallbacks} of 160 reactions fell back" in html
    # What the model said, read-only.
    answers = client.get("/admin/simulations/judgeanswer/").content.decode()
    assert "The user would most likely snooze this one." in answers
    assert client.get("/admin/simulations/judgeanswer/add/").status_code == 403
