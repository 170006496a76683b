"""The simulations admin: the start form, the list with its progress poll, a run's
page with its chart and tables, and that nothing of a run can be edited."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from simulations import services, tasks
from simulations.models import Run, RunChunk, RunStatus

pytestmark = pytest.mark.django_db

HOME = "/admin/simulations/"
SVG = "{http://www.w3.org/2000/svg}"
FORM = {
    "policies": ["egreedy-v1", "egreedy-v2"],
    "judge": "rule",
    "n_users": "7",
    "n_rounds": "6",
    "seed": "42",
    "n_candidates": "5",
    "chunk_users": "3",
}


def page_of(run: Run) -> str:
    return f"/admin/simulations/run/{run.pk}/change/"


def finished(**overrides) -> Run:
    args = dict(
        policies=["egreedy-v1", "egreedy-v2", "linucb-v1"],
        judge="rule",
        n_users=10,
        n_rounds=12,
        seed=5,
        actor=None,
        chunk_users=4,
    )
    run = services.run_create(**{**args, **overrides})
    return services.run_execute(run_id=run.id)


@pytest.fixture
def staff(client, staff_user) -> Client:
    client.force_login(staff_user)
    return client


@pytest.fixture
def sent(monkeypatch) -> list[tuple]:
    messages: list[tuple] = []
    monkeypatch.setattr(tasks.run_chunk, "delay", lambda *args: messages.append(args))
    # A worker fans the start out into the chunks' tasks: here, at once.
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)
    return messages


def staff_with(*codenames: str, username: str = "viewer") -> Client:
    user = get_user_model().objects.create_user(
        username=username, password="x" * 12, is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="simulations", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def chart(html: str) -> ET.Element:
    match = re.search(r'<svg class="oo-chart".*?</svg>', html, re.S)
    assert match, "no chart"
    return ET.fromstring(match.group(0))


# --- the pages open ----------------------------------------------------------


def test_the_home_page_has_the_start_form_and_every_run_with_a_progress_bar(staff):
    done = finished()
    queued = services.run_create(
        policies=["egreedy-v1"], judge="rule", n_users=3, n_rounds=2, seed=1, actor=None
    )

    html = staff.get(HOME).content.decode()

    assert 'name="csrfmiddlewaretoken"' in html
    for name in ("egreedy-v1", "egreedy-v2", "linucb-v1"):
        assert f'type="checkbox" name="policies" value="{name}"' in html
    for name in ("judge", "n_users", "n_rounds", "seed", "n_candidates"):
        assert f'name="{name}"' in html
    # Newest first; the queued run is polled, the finished one is not.
    assert html.index(str(queued.pk)) < html.index(str(done.pk))
    assert f'data-run="{queued.pk}" data-live' in html
    assert f'data-run="{done.pk}">' in html
    row = re.search(rf'<tr id="run-{done.pk}".*?</tr>', html, re.S).group(0)
    assert 'role="progressbar"' in row and 'aria-valuenow="3"' in row
    assert 'aria-valuetext="3 of 3 chunks"' in row and "width: 100.0%" in row
    assert "simulations/progress.js" in html
    assert staff.get("/admin/").status_code == 200
    runs = staff.get("/admin/simulations/run/")
    assert runs.status_code == 200
    # The run list leads to the start form: a newcomer lands there from "Runs".
    start = '<a href="/admin/simulations/#start">Start a run</a>'
    assert start in runs.content.decode()


def test_the_run_list_filters_by_status_and_judge_and_finds_a_run_by_id(staff):
    done = finished()
    other = services.run_create(
        policies=["egreedy-v2"], judge="rule", n_users=3, n_rounds=2, seed=1, actor=None
    )
    changelist = "/admin/simulations/run/"

    page = staff.get(changelist, {"status__exact": "finished"}).content.decode()
    assert str(done.pk) in page and str(other.pk) not in page
    assert staff.get(changelist, {"judge": "rule"}).status_code == 200
    page = staff.get(changelist, {"q": str(other.pk)}).content.decode()
    assert str(other.pk) in page and str(done.pk) not in page
    page = staff.get(changelist, {"q": "linucb"}).content.decode()
    assert str(done.pk) in page and str(other.pk) not in page


def test_a_finished_run_page_shows_parameters_timings_and_every_table(staff):
    run = finished()
    html = staff.get(page_of(run)).content.decode()

    for text in ("Finished", "3 of up to 4 users", "10 × 12", "Throughput", "seed"):
        assert text.lower() in html.lower(), text
    results = html[html.index('id="results"') : html.index('id="curve"')]
    for row in run.summary["policies"]:
        assert row["policy"] in results
        assert f"{row['mean_reward']:.4f}" in results
    personas = html[html.index('id="personas"') : html.index('id="picks"')]
    for winner in run.summary["winners"]:
        row = re.search(
            rf'<tr data-persona="{winner["persona"]}">.*?</tr>', personas, re.S
        ).group(0)
        marked = re.findall(r'<td class="oo-num oo-winner"[^>]*>(.*?)</td>', row, re.S)
        assert len(marked) == 1  # one winner per persona
        assert f"{winner['mean_reward']:.4f}" in marked[0]
        assert "(winner)" in marked[0]
    picks = html[html.index('id="picks"') :]
    for label in ("P1", "P4", "overdue", "&lt; 1 d", "30+ d", "done", "dismissed"):
        assert label in picks, label
    # Each policy's shares of each group sum to 100 %.
    shares = re.findall(r"--share: ([\d.]+)%", picks)
    assert len(shares) == 3 * (4 + 1 + 4 + 3)
    priority = [float(s) for s in shares[:4]]
    assert sum(priority) == pytest.approx(100, abs=0.5)


def test_the_chart_has_one_polyline_per_policy_with_a_point_per_round(staff):
    run = finished()
    svg = chart(staff.get(page_of(run), {"smooth": "1"}).content.decode())

    assert svg.get("role") == "img"
    labelled = svg.get("aria-labelledby").split()
    ids = {e.get("id"): e for e in svg.iter() if e.get("id")}
    assert ids[labelled[0]].tag == f"{SVG}title"
    assert "Mean reward per round" in ids[labelled[0]].text
    assert "linucb-v1 ends at" in ids[labelled[1]].text
    lines = svg.findall(f".//{SVG}polyline")
    assert [line.get("data-policy") for line in lines] == run.policies
    for line in lines:
        assert len(line.get("points").split()) == run.n_rounds
        assert line.find(f"{SVG}title").text == line.get("data-policy")
    legend = [t.text for t in svg.findall(f".//{SVG}g[@class='oo-chart-legend']//")]
    assert [t.strip() for t in legend if t and t.strip()] == run.policies
    ticks = [
        t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "oo-chart-tick"
    ]
    assert "1" in ticks and "12" in ticks
    labels = [
        t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "oo-chart-label"
    ]
    assert labels == ["Round", "Mean reward"]


def test_smoothing_keeps_the_points_and_says_what_it_did(staff):
    run = finished()
    raw = chart(staff.get(page_of(run), {"smooth": "1"}).content.decode())
    html = staff.get(page_of(run), {"smooth": "4"}).content.decode()
    smoothed = chart(html)

    assert "averages it with the 3 rounds before" in html
    pairs = zip(
        raw.findall(f".//{SVG}polyline"),
        smoothed.findall(f".//{SVG}polyline"),
        strict=True,
    )
    for before, after in pairs:
        assert len(after.get("points").split()) == run.n_rounds
        assert after.get("points") != before.get("points")
    # Nonsense falls back to the default; a huge window to the run's length.
    assert staff.get(page_of(run), {"smooth": "x"}).status_code == 200
    assert "with the 11 rounds before" in (
        staff.get(page_of(run), {"smooth": "999"}).content.decode()
    )
    one = staff.get(page_of(run), {"smooth": "2"}).content.decode()
    assert "averages it with the round before" in one and "1 rounds" not in one


def test_a_running_run_page_polls_and_a_failed_one_says_why(staff):
    run = services.run_create(
        policies=["egreedy-v1"],
        judge="rule",
        n_users=6,
        n_rounds=3,
        seed=1,
        actor=None,
        chunk_users=2,
    )
    services.run_chunk_execute(run_id=run.id, chunk_index=0)
    html = staff.get(page_of(run)).content.decode()
    assert "data-live data-reload-when-done" in html
    assert 'aria-valuenow="1"' in html and 'id="reward-chart"' not in html

    services.run_fail(run_id=run.id, reason="chunk 1: RuntimeError: judge exploded")
    html = staff.get(page_of(run)).content.decode()
    assert "The run failed." in html and "judge exploded" in html
    assert "data-live" not in html


def test_an_unknown_run_page_goes_back_to_the_admin_with_a_message(staff):
    response = staff.get(f"/admin/simulations/run/{uuid.uuid4()}/change/")
    assert response.status_code == 302


# --- starting a run from the form --------------------------------------------


def test_the_start_form_starts_a_run_on_the_workers_as_the_user(
    staff, staff_user, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(HOME, FORM)

    # Back to the form as it was typed.
    assert response.status_code == 302
    assert response["Location"].startswith(f"{HOME}?policies=egreedy-v1")
    run = Run.objects.get()
    assert (run.policies, run.n_users, run.n_rounds, run.seed) == (
        ["egreedy-v1", "egreedy-v2"],
        7,
        6,
        42,
    )
    assert run.created_by == staff_user and run.status == RunStatus.QUEUED
    assert sent == [(str(run.pk), 0), (str(run.pk), 1), (str(run.pk), 2)]
    html = staff.get(response["Location"]).content.decode()
    assert "egreedy-v1 vs egreedy-v2</a> started: 3 chunks queued" in html
    for name in ("n_users", "n_rounds", "seed", "chunk_users"):
        assert f'name="{name}" value="{FORM[name]}"' in html
    assert 'value="hybrid-v1" id="id_policies_2">' in html  # not ticked, as sent


def test_every_bad_value_is_shown_at_once_and_nothing_is_written(staff, sent):
    response = staff.post(
        HOME, {**FORM, "n_users": "0", "seed": "-1", "n_candidates": "500"}
    )

    html = response.content.decode()
    assert "Please correct the errors below." in html
    for field, words in (
        ("n_users", "Users must be between 1 and"),
        ("seed", "Seed must be between 0 and"),
        ("n_candidates", "Candidates must be between 1 and 100"),
    ):
        row = re.search(
            rf'<div class="form-row[^"]*field-{field}[^"]*">.*?</fieldset>', html, re.S
        )
        assert words in row.group(0), field
    assert not Run.objects.exists() and sent == []


def test_without_a_chunk_size_the_run_s_size_chooses_one(staff, sent):
    response = staff.post(
        HOME, {**FORM, "n_users": "1000", "n_rounds": "100", "chunk_users": ""}
    )

    assert response.status_code == 302
    run = Run.objects.get()
    # 2 policies x 100 rounds x 5 candidates: 150 users make a chunk of work.
    assert (run.chunk_users, run.chunks_total) == (150, 7)
    assert "chunk_users" not in response["Location"]  # the next run chooses too


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"n_users": "0"}, "n_users", "Users must be between 1 and"),
        ({"n_rounds": "20000"}, "n_rounds", "Rounds must be between 1 and 10,000"),
        ({"seed": "-1"}, "seed", "Seed must be between 0 and"),
        (
            {"n_candidates": "500"},
            "n_candidates",
            "Candidates must be between 1 and 100",
        ),
        ({"policies": []}, "policies", "1 to 10 policies, not 0"),
        ({"policies": ["nope"]}, "policies", "Select a valid choice"),
        ({"n_users": "lots"}, "n_users", "Enter a whole number"),
        ({"judge": "oracle"}, "judge", "Select a valid choice"),
        (
            {"n_users": "100000", "n_rounds": "10000", "chunk_users": "2000"},
            "chunk_users",
            "too large for one worker",
        ),
    ],
)
def test_bad_input_shows_the_error_on_its_field_and_writes_nothing(
    staff, sent, django_capture_on_commit_callbacks, change, field, words
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = staff.post(HOME, {**FORM, **change})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Please correct the error below." in html
    row = re.search(
        rf'<div class="form-row[^"]*field-{field}[^"]*">.*?</fieldset>', html, re.S
    )
    errors = re.search(r'<ul class="errorlist"[^>]*>(.*?)</ul>', row.group(0), re.S)
    assert words in errors.group(1)
    assert not Run.objects.exists() and not RunChunk.objects.exists()
    assert callbacks == [] and sent == []
    # What was typed is kept.
    assert f'value="{change.get("n_users", FORM["n_users"])}"' in html


def test_run_again_fills_the_form_with_the_run_parameters(staff):
    run = finished(seed=77, n_candidates=4)
    html = staff.get(page_of(run)).content.decode()
    link = re.search(r'href="(/admin/simulations/\?[^"]+)"[^>]*>Run again', html)
    form = staff.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert 'name="seed" value="77"' in form
    assert 'name="n_candidates" value="4"' in form
    assert re.search(r'value="linucb-v1" id="id_policies_\d" checked', form)


# --- permissions, and no editing ---------------------------------------------


def test_staff_without_the_permission_get_403_everywhere(sent):
    run = finished()
    client = staff_with()
    for url in (HOME, page_of(run), "/admin/simulations/run/progress/"):
        assert client.get(url).status_code == 403, url
    assert client.post(HOME, FORM).status_code == 403
    assert Run.objects.count() == 1


def test_viewing_is_not_starting_the_post_is_rechecked(sent):
    run = finished()
    client = staff_with("view_run")
    html = client.get(HOME).content.decode()
    assert str(run.pk) in html and "Start the run" not in html
    assert client.get(page_of(run)).status_code == 200
    assert "Run again" not in client.get(page_of(run)).content.decode()

    assert client.post(HOME, FORM).status_code == 403
    assert Run.objects.count() == 1 and sent == []

    starter = staff_with("view_run", "add_run", username="starter")
    starter_user = get_user_model().objects.get(username="starter")
    assert starter.post(HOME, FORM).status_code == 302
    assert Run.objects.filter(created_by=starter_user).count() == 1


def test_not_logged_in_goes_to_the_login_page(client):
    for url in (HOME, "/admin/simulations/run/progress/"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_form_needs_its_csrf_token(staff_user, sent):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.post(HOME, FORM).status_code == 403
    assert not Run.objects.exists()


def test_a_run_cannot_be_edited_added_or_deleted_in_the_admin(staff):
    run = finished()
    summary = run.summary
    assert staff.post(page_of(run), {"seed": 1, "summary": "{}"}).status_code == 403
    assert (
        staff.post(
            f"/admin/simulations/run/{run.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert staff.get("/admin/simulations/run/add/").status_code == 403
    run.refresh_from_db()
    assert run.summary == summary and run.seed == 5
    assert 'name="_save"' not in staff.get(page_of(run)).content.decode()
    # Events have no admin list: a run holds millions.
    assert staff.get("/admin/simulations/runevent/").status_code == 404


# --- the progress poll -------------------------------------------------------


def test_the_poll_answers_each_run_progress(staff):
    run = services.run_create(
        policies=["egreedy-v1"],
        judge="rule",
        n_users=6,
        n_rounds=3,
        seed=1,
        actor=None,
        chunk_users=2,
    )
    services.run_chunk_execute(run_id=run.id, chunk_index=0)
    done = finished()

    response = staff.get(
        "/admin/simulations/run/progress/", {"id": [str(run.pk), str(done.pk)]}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    runs = {r["id"]: r for r in response.json()["runs"]}
    live = runs[str(run.pk)]
    assert (live["status"], live["chunks_done"], live["chunks_total"]) == (
        "running",
        1,
        3,
    )
    assert live["percent"] == 33.3 and live["live"] and live["best"] is None
    over = runs[str(done.pk)]
    assert over["percent"] == 100.0 and not over["live"]
    best = max(done.summary["policies"], key=lambda p: p["mean_reward"])
    assert over["best"] == {
        "policy": best["policy"],
        "mean_reward": best["mean_reward"],
    }
    assert over["url"] == page_of(done)


def test_the_poll_refuses_bad_ids(staff):
    url = "/admin/simulations/run/progress/"
    response = staff.get(url, {"id": "nope"})
    assert response.status_code == 400 and response.json()["field"] == "id"
    many = [str(uuid.uuid4()) for _ in range(101)]
    assert staff.get(url, {"id": many}).status_code == 400
    assert staff.get(url).json() == {"runs": []}


def test_the_results_show_intervals_differences_and_regret(staff):
    run = finished()
    html = staff.get(page_of(run)).content.decode()

    results = html[html.index('id="results"') : html.index('id="curve"')]
    assert "Minus egreedy-v1" in results and "Regret" in results
    for row in run.summary["policies"]:
        line = re.search(
            rf'<tr[^>]*data-policy="{row["policy"]}">.*?</tr>', results, re.S
        ).group(0)
        low, high = row["mean_ci"]
        assert f"[{low:.4f}, {high:.4f}]" in line
        assert f'<td class="oo-num oo-regret">{row["regret"]:.4f}</td>' in line
        diff = row["diff_vs_first"]
        if diff is not None:
            signed = f"{diff['low']:+.4f}".replace("-", "\u2212")
            assert signed in line
    assert f"expects {run.summary['oracle_mean']:.4f}" in results


def test_the_regret_curve_is_drawn_beside_the_reward_curves(staff):
    run = finished()
    html = staff.get(page_of(run), {"smooth": "1"}).content.decode()

    start = html.index('<svg class="oo-chart" id="regret-chart"')
    svg = ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])
    title = svg.find(f"{SVG}title").text
    assert title == "Regret per round"
    lines = svg.findall(f".//{SVG}polyline")
    assert [line.get("data-policy") for line in lines] == run.policies
    assert all(len(line.get("points").split()) == 12 for line in lines)
    labels = [
        t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "oo-chart-label"
    ]
    assert labels == ["Round", "Regret"]
    assert 'id="reward-chart"' in html


def test_a_run_without_regret_or_older_results_still_shows(staff):
    run = finished()
    summary = run.summary
    for row in summary["policies"]:  # as summarised before intervals and regret
        for key in ("mean_ci", "diff_vs_first", "expected_reward", "regret"):
            row.pop(key)
    for key in ("oracle_mean", "oracle_curve", "regret_curve", "per_user"):
        summary.pop(key)
    run.save(update_fields=["summary"])

    response = staff.get(page_of(run))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="regret-chart"' not in html and 'id="reward-chart"' in html
