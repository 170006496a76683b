"""A local OpenAI-compatible server for the tests: real HTTP on 127.0.0.1.

It answers ``POST /v1/chat/completions`` with whatever its ``respond`` function
makes of the request's body (a ``Reply``: a status, a body and a delay), so a
test scripts well-formed completions, malformed ones, slow ones and failures,
and reads back every request it received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model-1"


@dataclass(frozen=True)
class Reply:
    body: dict | str = ""
    status: int = 200
    delay: float = 0.0  # seconds before answering


def chat(content: str, *, model: str = MODEL) -> Reply:
    """A well-formed chat completion whose answer is ``content``."""
    return Reply(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    )


def last_user_message(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


class FakeLlm:
    """Serve ``respond(body) -> Reply`` until ``stop()`` (or the ``with`` ends)."""

    def __init__(self, respond: Callable[[dict], Reply]) -> None:
        self.respond = respond
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    reply = Reply({"error": "no such route"}, status=404)
                else:
                    reply = server.respond(body)
                time.sleep(reply.delay)
                raw = (
                    reply.body
                    if isinstance(reply.body, str)
                    else json.dumps(reply.body)
                ).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: what a slow reply tests

            def log_message(self, *args):  # quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeLlm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)


if __name__ == "__main__":
    # `python -m oo_ml.tests.llm_server [ANSWER]`: answer every question with
    # ANSWER (a canned tip by default) until killed, and print the base URL
    # (bin/fuzz points the platform at it).
    import sys

    answer = sys.argv[1] if len(sys.argv) > 1 else "Ready to file your taxes?"
    with FakeLlm(lambda body: chat(answer)) as server:
        print(server.url, flush=True)
        threading.Event().wait()
