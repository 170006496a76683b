"""python manage.py runsim: the command line that compares policies offline."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from simulations.judges import JUDGES, RuleJudge
from simulations.models import Run, RunStatus
from simulations.personas import PERSONA_NAMES

pytestmark = pytest.mark.django_db

DONE_WHEN = [
    "--policies",
    "egreedy-v1",
    "egreedy-v2",
    "--judge",
    "rule",
    "--n-users",
    "5",
    "--n-rounds",
    "20",
    "--seed",
    "42",
]


def runsim(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("runsim", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_done_when_command_prints_the_table_identically_twice():
    first, progress = runsim(*DONE_WHEN)
    second, _ = runsim(*DONE_WHEN)
    assert first == second
    lines = first.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("policy "))
    assert lines[header].split() == [
        "policy",
        "total",
        "reward",
        "mean",
        "reward",
        "95%",
        "interval",
        "pulls",
    ]
    for offset, name in enumerate(["egreedy-v1", "egreedy-v2"], start=1):
        cells = lines[header + offset].split()
        assert cells[0] == name and cells[-1] == "100"  # 5 users x 20 rounds
        assert float(cells[2]) == pytest.approx(float(cells[1]) / 100, abs=1e-4)
        low, high = float(cells[3].strip("[,")), float(cells[4].strip("]"))
        assert low < float(cells[2]) < high
    # The paired difference, as the engine's per-user means give it (5 users,
    # t with 4 degrees of freedom).
    paired = lines.index(
        "paired by user, each policy minus egreedy-v1 (95% t interval over 5 users)"
    )
    assert lines[paired + 1].split() == [
        "egreedy-v2",
        "+0.0090",
        "[-0.1011,",
        "+0.1191]",
    ]
    oracle = next(line for line in lines if line.startswith("oracle "))
    assert oracle.startswith("oracle (the best candidate every round): expected mean")
    oracle_mean = float(oracle.split()[-1])
    at = lines.index(oracle)
    assert lines[at + 1].split() == [
        "policy",
        "expected",
        "reward",
        "regret",
        "regret,",
        "first",
        "10",
        "rounds",
    ]
    for offset, name in enumerate(["egreedy-v1", "egreedy-v2"], start=2):
        cells = lines[at + offset].split()
        assert cells[0] == name
        assert float(cells[2]) == pytest.approx(oracle_mean - float(cells[1]), abs=2e-4)
        assert float(cells[2]) > 0
        assert float(cells[3]) > 0  # the first 10 of the 20 rounds
    for persona in PERSONA_NAMES:
        row = next(line for line in lines if line.startswith(persona))
        assert row.split()[1] in ("egreedy-v1", "egreedy-v2")
    # Progress and the run's id go to stderr, so stdout is only the results.
    assert "1/1 chunks" in progress
    assert Run.objects.filter(status=RunStatus.FINISHED).count() == 2
    run = Run.objects.first()
    assert run.created_by_name.startswith("runsim")


def test_the_readme_shows_what_its_runsim_command_prints():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split(".venv/bin/python manage.py runsim ", 1)[1].split("```")[0]
    shown = []
    for line in block.splitlines()[2:]:  # after the command's two lines
        if line == "# ...":
            break
        shown.append(line[2:] if line.startswith("# ") else "")
    printed, _ = runsim(*DONE_WHEN)
    assert printed.splitlines()[: len(shown)] == shown
    assert len(shown) > 15


def test_a_different_seed_prints_different_results():
    first, _ = runsim(*DONE_WHEN)
    other, _ = runsim(*DONE_WHEN[:-1], "43")
    assert first != other


def test_chunks_show_in_the_progress_bar_and_not_in_the_results():
    one, _ = runsim(*DONE_WHEN)
    chunked, progress = runsim(*DONE_WHEN, "--chunk-users", "2")
    assert one == chunked
    assert "3/3 chunks" in progress


def test_bad_input_is_a_clear_error():
    with pytest.raises(CommandError, match="No policy named 'nope'"):
        runsim("--policies", "egreedy-v1", "nope", "--n-users", "5")
    with pytest.raises(CommandError, match="n_users must be between 1"):
        runsim("--policies", "egreedy-v1", "--n-users", "0")
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "args", [["--timeout", "5"], ["--workers", "--timeout", "0"]], ids=str
)
def test_a_timeout_needs_workers_and_a_positive_number(args):
    with pytest.raises(CommandError, match="--timeout is a positive number"):
        runsim(*DONE_WHEN, *args)
    assert not Run.objects.exists()


def test_a_failed_run_says_why(monkeypatch):
    class BrokenJudge(RuleJudge):
        def react(self, **kwargs):
            raise ValueError("no reaction")

    monkeypatch.setitem(JUDGES, "rule", BrokenJudge())
    with pytest.raises(CommandError, match="failed: chunk 0 .*no reaction"):
        runsim(*DONE_WHEN)
