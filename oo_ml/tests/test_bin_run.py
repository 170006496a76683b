"""``make run`` (bin/run) stopped early, by a Ctrl-C or a SIGTERM to make: it
ends within seconds, and nothing it started outlives it.

It runs on a bare machine's defaults (SQLite and the embedded broker in a var
folder of its own), so it needs no database from the tests. Every process it
starts inherits a tag in its environment; after the stop, none may be left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import _free_port, bin_run_start

TAG = "OO_ML_RUN_TEST_TAG"


def _tagged(tag: str) -> list[int]:
    """The processes whose environment carries ``TAG=tag``."""
    found = []
    needle = f"{TAG}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except OSError:
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize(
    "stop",
    [
        # make passes a SIGTERM to its child: bin/run itself, not a shell.
        pytest.param(lambda p: p.send_signal(signal.SIGTERM), id="kill-make-s-pid"),
        pytest.param(lambda p: os.killpg(p.pid, signal.SIGINT), id="ctrl-c"),
    ],
)
def test_stopping_make_run_a_second_after_it_answers_stops_its_worker(tmp_path, stop):
    tag = uuid.uuid4().hex
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        {
            TAG: tag,
            "VENV": sys.prefix,
            "PORT": str(port),
            "WEB_CONCURRENCY": "3",  # make run's on two cores
            "OO_ML_VAR_DIR": str(tmp_path / "var"),
        }
    )
    log = tmp_path / "run.log"
    script = bin_run_start(env, log)
    try:
        _wait(lambda: _healthy(port), 120, "bin/run never answered /health")
        assert len(_tagged(tag)) >= 3  # bin/run, the server, the worker, ...
        time.sleep(1)

        stop(script)
        stopping = time.monotonic()

        # A Ctrl-C reaches the server through bin/run alone, so its workers stop
        # at once rather than after their 30 s graceful timeout.
        # bin/run ends the server's and the worker's groups at once and kills
        # what is left after 10 s; the rest is start-up slack on a slow machine.
        assert script.wait(timeout=30) != 0
        assert time.monotonic() - stopping < 25
        _wait(lambda: not _tagged(tag), 15, f"left running: {_tagged(tag)}")
    finally:
        for pid in _tagged(tag):  # whatever a failure left
            os.kill(pid, signal.SIGKILL)
        script.wait()
        print(f"--- bin/run: {log}\n{log.read_text(errors='replace')}")
