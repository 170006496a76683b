"""Fixtures shared by every app's tests."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from oo_ml.auth import service_token_create, token_cache_clear, token_create
from oo_ml.tests.llm_server import MODEL, FakeLlm

ROOT = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Tests run without collectstatic, so without whitenoise's manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """No test inherits another's verified tokens, or its failed logins and
    tokens (the tests' shared cache is this process's memory, test_settings)."""
    token_cache_clear()
    cache.clear()
    yield
    token_cache_clear()
    cache.clear()


@pytest.fixture
def registry(db):
    """The initial registry, for transactional tests whose flush removed it."""
    from policies.models import Policy
    from policies.registry import registry_create

    registry_create(Policy)


@pytest.fixture
def service_token(db) -> str:
    return service_token_create(name="recommender")


@pytest.fixture
def api(service_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {service_token}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user(
        username="ops", password="a-long-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    client = APIClient()
    client.force_login(staff_user)
    return client


@pytest.fixture
def staff_token_api(staff_user) -> APIClient:
    """The staff user over the API with a token of theirs, as a script would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=staff_user)}")
    return client


@pytest.fixture(autouse=True)
def _no_llm(settings):
    """No test reaches an LLM configured in the environment: those that need
    one start their own (``fake_llm``)."""
    settings.LLM_BASE_URL = ""


@pytest.fixture
def fake_llm(settings):
    """Start a local OpenAI-compatible server, ``fake_llm(respond)``, and point
    the settings at it (``timeout``, ``retries``: the client's); stopped at the
    end."""
    servers: list[FakeLlm] = []

    def start(respond, *, timeout: float = 2.0, retries: int = 2) -> FakeLlm:
        server = FakeLlm(respond).start()
        servers.append(server)
        settings.LLM_BASE_URL = server.url
        settings.LLM_MODEL = MODEL
        settings.LLM_API_KEY = "test-key"
        settings.LLM_TIMEOUT_SECONDS = timeout
        settings.LLM_RETRIES = retries
        return server

    yield start
    for server in servers:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_run_start(env: dict, log: Path) -> subprocess.Popen:
    """``make run`` (``bin/run`` under make, as the README starts it) in a
    session (a terminal) of its own, on ``env["VENV"]``, its output appended to
    ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (make test does)")
    return (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


@dataclasses.dataclass
class Served:
    """``bin/serve`` running: its address and its main process."""

    url: str
    proc: subprocess.Popen

    def workers(self) -> list[int]:
        """The worker processes' ids: the main process's children."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return sorted(map(int, children.read_text().split()))


@contextlib.contextmanager
def serving(database_url: str, workers: int = 4, env: dict | None = None):
    """``bin/serve``, the production entry point, on a free port, serving
    ``database_url`` over real HTTP (``env``: more of its environment)."""
    port = _free_port()
    env = {
        **os.environ,
        "VENV": sys.prefix,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "SERVE_COLLECTSTATIC": "0",  # the API needs no static files
        # A worker still loading the app when told to stop is killed after this.
        "WEB_GRACEFUL_TIMEOUT": "5",
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        **(env or {}),
    }
    proc = subprocess.Popen([ROOT / "bin" / "serve"], cwd=ROOT, env=env)
    served = Served(f"http://127.0.0.1:{port}", proc)
    try:
        wait_until_serving(served, workers)
        yield served
    finally:
        proc.terminate()
        proc.wait(timeout=40)


def wait_until_serving(served: Served, workers: int, timeout: float = 60) -> None:
    """Until it answers over HTTP (any status) with all its workers up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{served.url}/health", timeout=2)
        except urllib.error.HTTPError:
            pass  # it answers, even if not healthy
        except OSError:
            if served.proc.poll() is not None:
                raise RuntimeError("bin/serve exited") from None
            if time.monotonic() > deadline:
                raise RuntimeError("bin/serve did not start") from None
            time.sleep(0.2)
            continue
        if len(served.workers()) >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"bin/serve has {served.workers()}, not {workers}")
        time.sleep(0.2)


@pytest.fixture
def served(transactional_db, registry):
    """bin/serve serving the test database: use with transactional tests."""
    with serving(_database_url()) as running:
        yield running


# --- real Celery workers ------------------------------------------------------

# A broker that delivers again a message whose worker died before acking it.
TEST_BROKER_URL = os.environ.get(
    "OO_ML_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"
)


@contextlib.contextmanager
def celery_sending_to(broker_url: str, queue: str, transport_options=None):
    """This process's Celery app sends its tasks to ``queue`` on ``broker_url``."""
    from oo_ml.celery import app

    keys = ("broker_url", "broker_transport_options", "task_default_queue")
    saved = {key: app.conf[key] for key in keys}

    def use(conf: dict) -> None:
        # Celery takes its connection and producer pools (kombu's, one per
        # broker URL, kept for the process) on first use and has no public way
        # to point them elsewhere: forget them, so the next send takes the pools
        # of the broker configured now.
        app._pool = app.amqp._producer_pool = None
        app.conf.update(conf)

    use(
        {
            "broker_url": broker_url,
            "broker_transport_options": transport_options or {},
            "task_default_queue": queue,
        }
    )
    try:
        yield
    finally:
        use(saved)


class CeleryWorker:
    """``celery -A oo_ml worker`` in a process group of its own, logging to a file."""

    def __init__(self, command: list[str], env: dict, log: Path):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its pool's children share its group
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> CeleryWorker:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.log_text()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the whole group, main process and pool children, and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def group_running(self) -> list[int]:
        """The processes of its group still running (zombies are not: they
        wait for init to reap them). Linux's /proc."""
        running = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # pid (comm) state ppid pgrp ...: comm may hold spaces.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                    running.append(int(stat.parent.name))
        return running


def celery_worker_command(queue: str, concurrency: int, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "oo_ml",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "--queues",
        queue,
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


@dataclasses.dataclass(frozen=True)
class CeleryBroker:
    """Where this process sends its tasks and the workers read them from."""

    url: str
    queue: str
    worker_env: dict  # what a worker's environment needs to use it


def _queue_delete(broker_url: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


@pytest.fixture
def celery_queue(transactional_db, registry) -> CeleryBroker:
    """A queue of this test's own on the test broker (RabbitMQ), where this
    process sends its tasks; deleted afterwards, so no message outlives the test
    and none left by another run can reach its workers."""
    queue = f"oo_ml-test-{uuid.uuid4().hex[:12]}"
    with celery_sending_to(TEST_BROKER_URL, queue):
        yield CeleryBroker(
            TEST_BROKER_URL,
            queue,
            # The workers' own sends (a run's fan-out) go to this queue too.
            {"CELERY_BROKER_URL": TEST_BROKER_URL, "CELERY_TASK_DEFAULT_QUEUE": queue},
        )
    _queue_delete(TEST_BROKER_URL, queue)


@pytest.fixture
def embedded_broker(transactional_db, registry, tmp_path) -> CeleryBroker:
    """The filesystem broker of `make run`, in folders under tmp_path/var (the
    OO_ML_VAR_DIR of the workers), with its default queue."""
    var = tmp_path / "var"
    folders = {
        "data_folder_in": var / "broker",
        "data_folder_out": var / "broker",
        "processed_folder": var / "broker-processed",
        "control_folder": var / "broker-control",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    options = {key: str(folder) for key, folder in folders.items()}
    with celery_sending_to(
        "filesystem://", "celery", options | {"store_processed": False}
    ):
        yield CeleryBroker(
            "filesystem://",
            "celery",
            {"CELERY_BROKER_URL": "filesystem://", "OO_ML_VAR_DIR": str(var)},
        )


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """Start real workers, ``celery_worker(broker, concurrency=1)``, on the test
    database and the broker of the ``celery_queue`` or ``embedded_broker``
    fixture. Their logs (files in tmp_path) are printed at the end, so a failing
    test shows them; every worker left is killed."""
    workers: list[CeleryWorker] = []

    def start(broker: CeleryBroker, concurrency: int = 1) -> CeleryWorker:
        number = len(workers) + 1
        env = {
            **os.environ,
            "OO_ML_VAR_DIR": str(tmp_path / "var"),
            **broker.worker_env,
            "DATABASE_URL": _database_url(),
        }
        worker = CeleryWorker(
            celery_worker_command(
                broker.queue, concurrency, name=f"test-{uuid.uuid4().hex[:8]}"
            ),
            env,
            tmp_path / f"worker-{number}.log",
        )
        workers.append(worker)
        return worker.wait_ready()

    yield start
    for number, worker in enumerate(workers, start=1):
        worker.kill()
        print(f"--- worker {number}: {worker.log}\n{worker.log_text()}")


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright (which never downloads a browser)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django refuses
    # database calls beside a running loop unless told they are safe, as they
    # are here (the loop only talks to the browser).
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def admin_page(chromium, live_server, staff_user):
    """A browser page logged in to the admin of a live server, as ``ops``."""
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    yield page
    context.close()
