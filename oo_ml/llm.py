"""The one LLM client: the OpenAI-compatible chat completions API over httpx.

LiteLLM's proxy, vLLM and Ollama all serve ``POST {base}/chat/completions``, so
one small client talks to any of them: no vendor SDK. Each attempt has a
timeout; a timeout, a lost connection, a 429 or a 5xx is tried again a bounded
number of times with a short backoff; anything else, or the last failure, is an
``LlmUnavailable`` (503 through the error handler, never a 500). Off while
``OO_ML_LLM_BASE_URL`` is unset: ``llm_config()`` is None and ``llm_off_reason()``
says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from oo_ml.errors import Unavailable

logger = logging.getLogger(__name__)

BACKOFF_SECONDS = 0.25  # doubled after each failed attempt
BACKOFF_MAX_SECONDS = 4.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
OFF_REASON = (
    "No LLM is configured: set OO_ML_LLM_BASE_URL (an OpenAI-compatible server, "
    "e.g. http://127.0.0.1:4000/v1) and OO_ML_LLM_MODEL."
)


class LlmUnavailable(Unavailable):
    """The LLM could not give an answer: down, slow, refusing, or not configured."""

    code = "llm_unavailable"


class LlmNotConfigured(LlmUnavailable):
    code = "llm_not_configured"

    def __init__(self) -> None:
        super().__init__(OFF_REASON)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    base_url: str
    model: str
    api_key: str = ""
    timeout_seconds: float = 30.0
    retries: int = 2


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str  # as the server names it, else the model asked for


def llm_config() -> LlmConfig | None:
    """The configured LLM, or None when it is off."""
    if not settings.LLM_BASE_URL:
        return None
    return LlmConfig(
        base_url=settings.LLM_BASE_URL,
        model=settings.LLM_MODEL,
        api_key=settings.LLM_API_KEY,
        timeout_seconds=settings.LLM_TIMEOUT_SECONDS,
        retries=settings.LLM_RETRIES,
    )


def llm_off_reason() -> str | None:
    """Why the LLM parts are off, or None when an LLM is configured."""
    return None if llm_config() is not None else OFF_REASON


class LlmClient:
    """A chat completions client; thread-safe (the judge asks from threads).

    Use it as a context manager, or ``close()`` it, to release its connections.
    """

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        headers = {"Accept": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._http = httpx.Client(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_seconds),
        )

    def __enter__(self) -> LlmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        model: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_object: bool = False,
    ) -> Completion:
        """The assistant's answer to ``messages``. ``json_object`` asks the
        server for a JSON object (``response_format``); the caller still
        validates what comes back."""
        body: dict = {
            "model": model or self.config.model,
            "messages": messages,
            "temperature": temperature,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if json_object:
            body["response_format"] = {"type": "json_object"}
        payload = self._post(body)
        return _completion(payload, asked=body["model"])

    def _post(self, body: dict) -> dict:
        attempts = self.config.retries + 1
        delay = BACKOFF_SECONDS
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                failure = f"no answer within {self.config.timeout_seconds:g} s"
            except httpx.RequestError as error:
                failure = f"cannot be reached ({type(error).__name__}: {error})"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        failure = "answered 200 with a body that is not JSON"
                elif response.status_code in RETRY_STATUSES:
                    failure = f"answered {response.status_code}"
                else:  # the request itself is wrong: asking again will not help
                    raise LlmUnavailable(
                        f"The LLM at {self.config.base_url} refused the request: "
                        f"{response.status_code} {_excerpt(response.text)}"
                    )
            logger.warning(
                "LLM %s %s (attempt %d of %d)",
                self.config.base_url,
                failure,
                attempt,
                attempts,
            )
            if attempt < attempts:
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        raise LlmUnavailable(
            f"The LLM at {self.config.base_url} {failure}, after {attempts} "
            f"attempt{'s' if attempts > 1 else ''}: retry later."
        )


def _completion(payload, *, asked: str) -> Completion:
    """The first choice's text; an answer of another shape is unavailable."""
    try:
        text = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str):
        raise LlmUnavailable(
            "The LLM answered something that is not a chat completion "
            "(no choices[0].message.content)."
        )
    model = payload.get("model") if isinstance(payload, dict) else None
    return Completion(text=text, model=model if isinstance(model, str) else asked)


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def llm_client() -> LlmClient:
    """A client for the configured LLM; ``LlmNotConfigured`` when it is off."""
    config = llm_config()
    if config is None:
        raise LlmNotConfigured()
    return LlmClient(config)
