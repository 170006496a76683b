"""The LLM client against a local OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oo_ml import llm
from oo_ml.llm import LlmNotConfigured, LlmUnavailable, llm_client, llm_off_reason
from oo_ml.tests.llm_server import MODEL, Reply, chat

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch):
    monkeypatch.setattr(llm, "BACKOFF_SECONDS", 0.01)


def test_a_completion_sends_the_chat_request_and_reads_the_answer(fake_llm):
    server = fake_llm(lambda body: chat("hi there"))
    with llm_client() as client:
        answer = client.complete(MESSAGES, json_object=True, max_tokens=20)
    assert (answer.text, answer.model) == ("hi there", MODEL)
    (body,) = server.requests
    assert body == {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": 20,
        "response_format": {"type": "json_object"},
    }
    assert server.headers[0]["Authorization"] == "Bearer test-key"


def test_500s_are_retried_until_an_answer(fake_llm):
    replies = itertools.chain([Reply("oops", status=500)] * 2, itertools.repeat(None))
    server = fake_llm(lambda body: next(replies) or chat("third time"), retries=2)
    with llm_client() as client:
        assert client.complete(MESSAGES).text == "third time"
    assert server.count == 3


def test_retries_are_bounded(fake_llm):
    server = fake_llm(lambda body: Reply("busy", status=503), retries=1)
    with llm_client() as client, pytest.raises(LlmUnavailable) as error:
        client.complete(MESSAGES)
    assert server.count == 2
    assert error.value.status_code == 503
    assert "answered 503, after 2 attempts" in error.value.detail


def test_a_slow_server_times_out_each_attempt(fake_llm):
    server = fake_llm(lambda body: Reply(delay=1.0), timeout=0.2, retries=1)
    started = time.monotonic()
    with llm_client() as client, pytest.raises(LlmUnavailable) as error:
        client.complete(MESSAGES)
    assert time.monotonic() - started < 0.9  # two attempts of 0.2 s, not 1 s each
    assert "no answer within 0.2 s" in error.value.detail
    assert server.count == 2


def test_a_refused_request_is_not_retried(fake_llm):
    server = fake_llm(lambda body: Reply({"error": "bad key"}, status=401))
    with llm_client() as client, pytest.raises(LlmUnavailable) as error:
        client.complete(MESSAGES)
    assert server.count == 1
    assert "refused the request: 401" in error.value.detail


@pytest.mark.parametrize(
    "reply",
    [
        Reply("not json at all"),
        Reply({"choices": []}),
        Reply({"choices": [{"message": {"content": None}}]}),
        Reply(["a", "list"]),
    ],
)
def test_an_answer_of_another_shape_is_unavailable(fake_llm, reply):
    fake_llm(lambda body: reply, retries=0)
    with llm_client() as client, pytest.raises(LlmUnavailable):
        client.complete(MESSAGES)


def test_a_server_that_is_down_is_unavailable(fake_llm):
    server = fake_llm(lambda body: chat("never"), retries=1)
    server.stop()
    with llm_client() as client, pytest.raises(LlmUnavailable) as error:
        client.complete(MESSAGES)
    assert "cannot be reached" in error.value.detail


def test_off_when_no_base_url(settings):
    settings.LLM_BASE_URL = ""
    assert "OO_ML_LLM_BASE_URL" in llm_off_reason()
    with pytest.raises(LlmNotConfigured) as error:
        llm_client()
    assert error.value.code == "llm_not_configured"
    assert error.value.status_code == 503


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"OO_ML_LLM_BASE_URL": "ftp://x"}, "must start with http"),
        ({"OO_ML_LLM_BASE_URL": "http://x/v1"}, "OO_ML_LLM_MODEL must be set"),
        ({"OO_ML_LLM_TIMEOUT_SECONDS": "soon"}, "not a valid float"),
        ({"OO_ML_LLM_TIMEOUT_SECONDS": "0"}, "OO_ML_LLM_TIMEOUT_SECONDS"),
        ({"OO_ML_LLM_RETRIES": "-1"}, "OO_ML_LLM_RETRIES"),
        ({"OO_ML_LLM_CONCURRENCY": "0"}, "OO_ML_LLM_CONCURRENCY"),
    ],
)
def test_bad_settings_stop_start_up(environment, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OO_ML_LLM")}
    done = subprocess.run(
        [sys.executable, "-c", "import oo_ml.test_settings"],
        env={**clean, **environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert message in done.stderr
