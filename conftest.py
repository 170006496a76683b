"""Fixtures shared by every app's tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from oo_ml.auth import service_token_get_or_create, token_cache_clear

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
    token_cache_clear()
    yield
    token_cache_clear()


@pytest.fixture
def registry(db):
    """The initial registry, for transactional tests whose flush removed it."""
    from policies.models import Policy
    from policies.registry import registry_create

    registry_create(Policy)


@pytest.fixture
def service_token(db) -> str:
    return service_token_get_or_create(name="recommender")


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (make test does)")
    return (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


@contextlib.contextmanager
def gunicorn_serving(database_url: str, workers: int = 4):
    """A real gunicorn on a free port, serving ``database_url`` over real HTTP."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "oo_ml.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers, even if not healthy
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def gunicorn_url(transactional_db, registry):
    """gunicorn serving the test database: use with transactional tests."""
    with gunicorn_serving(_database_url()) as url:
        yield url


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
