"""A run started from the admin in a real Chromium, on a live server: its
progress bar moves as workers finish chunks, without a reload, and its page
shows the chart and the tables once it is done.

The chunks are executed as a worker executes them: each message ``run_start``
sends after the form's commit is kept here and handed to
``simulations.tasks.run_chunk`` by its arguments.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from playwright.sync_api import expect

from simulations import tasks
from simulations.models import Run, RunStatus

pytestmark = pytest.mark.usefixtures("registry")


@pytest.fixture
def broker(monkeypatch) -> list[tuple]:
    """The messages sent to the workers (from the live server's thread)."""
    messages: list[tuple] = []
    lock = threading.Lock()

    def send(*args) -> None:
        with lock:
            messages.append(args)

    monkeypatch.setattr(tasks.run_chunk, "delay", send)
    # A worker fans the start out into the chunks' tasks: here, at once.
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)
    return messages


def wait_for(messages: list, count: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        assert time.monotonic() < deadline, f"{len(messages)} of {count} sent"
        time.sleep(0.05)
    return list(messages)


def test_a_run_started_from_the_admin_shows_live_progress_then_its_results(
    admin_page, broker
):
    page = admin_page
    page.goto("/admin/simulations/")
    form = page.locator("#start")
    # The active policy and the shadows are ticked; the retired one is not.
    expect(form.get_by_label("egreedy-v1 (active, D=7)")).to_be_checked()
    expect(form.get_by_label("egreedy-v2 (shadow, D=12)")).to_be_checked()
    expect(form.get_by_label("hybrid-v1 (shadow, D=12)")).to_be_checked()
    expect(form.get_by_label("linucb-v1 (retired, D=5)")).not_to_be_checked()
    form.get_by_label("hybrid-v1 (shadow, D=12)").uncheck()
    form.get_by_label("Users:", exact=True).fill("7")
    form.get_by_label("Rounds:").fill("6")
    form.get_by_label("Seed:").fill("42")
    form.get_by_label("Users per chunk:").fill("3")

    form.get_by_role("button", name="Start the run").click()

    expect(page.locator(".messagelist")).to_contain_text("started: 3 chunks queued")
    run = Run.objects.get()
    row = page.locator(f"#run-{run.pk}")
    bar = row.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(bar).to_have_attribute("aria-valuetext", "0 of 3 chunks")
    expect(row).to_contain_text("Queued")
    sent = wait_for(broker, 3)
    assert sent == [(str(run.pk), i) for i in range(3)]

    # A marker that a reload would wipe: the row must change in place.
    page.evaluate("window.ooNoReload = true")
    tasks.run_chunk(*sent[0])
    expect(bar).to_have_attribute("aria-valuenow", "1")
    expect(row).to_contain_text("Running")
    expect(row).to_contain_text("1 / 3")

    for message in sent[1:]:
        tasks.run_chunk(*message)
    expect(row).to_contain_text("Finished")
    expect(bar).to_have_attribute("aria-valuenow", "3")
    run.refresh_from_db()
    assert run.status == RunStatus.FINISHED
    best = max(run.summary["policies"], key=lambda p: p["mean_reward"])
    expect(row.locator('[data-field="result"]')).to_contain_text(best["policy"])
    assert page.evaluate("window.ooNoReload") is True

    row.get_by_role("link", name="egreedy-v1 vs egreedy-v2").click()

    expect(page.locator("h1")).to_have_text("egreedy-v1 vs egreedy-v2")
    chart = page.get_by_role("img", name=re.compile("^Mean reward per round"))
    expect(chart).to_be_visible()
    lines = chart.locator("polyline")
    expect(lines).to_have_count(2)
    for i, name in enumerate(run.policies):
        expect(lines.nth(i)).to_have_attribute("data-policy", name)
        points = lines.nth(i).get_attribute("points").split()
        assert len(points) == run.n_rounds
    results = page.locator("#results table")
    expect(results).to_be_visible()
    expect(results.locator("tbody tr")).to_have_count(2)
    expect(results).to_contain_text(f"{best['mean_reward']:.4f}")
    personas = page.locator("#personas table")
    expect(personas).to_be_visible()
    expect(personas.locator("tbody tr")).to_have_count(5)
    expect(personas.locator("td.oo-winner")).to_have_count(5)
    picks = page.locator("#picks table")
    expect(picks).to_be_visible()
    expect(picks).to_contain_text("Priority")
    expect(picks).to_contain_text("Reaction")


def test_the_form_s_default_run_of_1000_users_moves_in_ten_chunks(admin_page, broker):
    """The policies the form ticks, hybrid-v1 among them, over 1,000 users: ten
    chunks of a second or two each, not one that sits at 0 / 1 (the hybrid
    policy learns from its block of 1,000 users whatever the chunk)."""
    page = admin_page
    page.goto("/admin/simulations/")
    form = page.locator("#start")
    expect(form.get_by_label("hybrid-v1 (shadow, D=12)")).to_be_checked()
    form.get_by_label("Users:", exact=True).fill("1000")
    expect(form.get_by_label("Rounds:")).to_have_value("100")
    expect(form.get_by_label("Users per chunk:")).to_have_value("")

    form.get_by_role("button", name="Start the run").click()

    expect(page.locator(".messagelist")).to_contain_text("started: 10 chunks queued")
    run = Run.objects.get()
    bar = page.locator(f"#run-{run.pk}").get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuetext", "0 of 10 chunks")
    assert len(run.policies) == 3 and run.chunk_users == 100


def test_a_run_started_from_the_admin_finishes_on_a_real_worker(
    admin_page, celery_queue, celery_worker
):
    """The same page, with a real ``celery worker`` reading the broker."""
    celery_worker(celery_queue, concurrency=2)
    page = admin_page
    page.goto("/admin/simulations/")
    form = page.locator("#start")
    form.get_by_label("hybrid-v1 (shadow, D=12)").uncheck()
    form.get_by_label("Users:", exact=True).fill("400")
    form.get_by_label("Rounds:").fill("50")
    form.get_by_label("Seed:").fill("7")
    form.get_by_label("Users per chunk:").fill("50")

    form.get_by_role("button", name="Start the run").click()

    run = Run.objects.get()
    row = page.locator(f"#run-{run.pk}")
    expect(row).to_contain_text("Finished", timeout=60_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "8")
    run.refresh_from_db()
    assert (run.status, run.chunks_done) == (RunStatus.FINISHED, 8)
    row.get_by_role("link", name="egreedy-v1 vs egreedy-v2").click()
    chart = page.get_by_role("img", name=re.compile("^Mean reward per round"))
    expect(chart.locator("polyline")).to_have_count(2)
    expect(page.locator("#results table tbody tr")).to_have_count(2)
