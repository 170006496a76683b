"""Health, schema and settings: the platform around the decision API."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from conftest import celery_sending_to, serving
from oo_ml.env import env
from oo_ml.llm import OFF_REASON

LLM_OFF = {"configured": False, "detail": OFF_REASON}


@pytest.fixture
def var_dir(tmp_path) -> Path:
    """A var/ with the embedded broker's folders, as `make run` makes them."""
    var = tmp_path / "var"
    for folder in ("broker", "broker-processed", "broker-control"):
        (var / folder).mkdir(parents=True)
    return var


@pytest.fixture
def embedded_broker_in(var_dir):
    """This process's Celery app on the embedded broker in ``var_dir``."""
    options = {
        "data_folder_in": str(var_dir / "broker"),
        "data_folder_out": str(var_dir / "broker"),
        "processed_folder": str(var_dir / "broker-processed"),
        "control_folder": str(var_dir / "broker-control"),
        "store_processed": False,
    }
    with celery_sending_to("filesystem://", "celery", options):
        yield var_dir


@pytest.mark.django_db
def test_health_needs_no_token_and_reports_its_dependencies(anon, embedded_broker_in):
    response = anon.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "database": True,
        "broker": True,
        "llm": LLM_OFF,
    }


@pytest.mark.django_db
def test_health_says_whether_an_llm_is_configured(anon, embedded_broker_in, settings):
    settings.LLM_BASE_URL, settings.LLM_MODEL = "http://127.0.0.1:9/v1", "m"
    response = anon.get("/health")
    assert response.json()["llm"] == {"configured": True, "detail": None}
    assert response.json()["ok"] is True  # the LLM is not asked


@pytest.mark.django_db
def test_health_reports_a_broker_that_cannot_take_a_message(anon, embedded_broker_in):
    shutil.rmtree(embedded_broker_in / "broker")
    response = anon.get("/health")
    assert response.status_code == 200  # the API still answers; runs cannot start
    assert response.json() == {
        "ok": False,
        "database": True,
        "broker": False,
        "llm": LLM_OFF,
    }


def test_health_answers_503_when_the_database_is_unreachable(var_dir):
    # Nothing listens on port 1: a real server with a real dead database.
    dead_database = "postgres://postgres@127.0.0.1:1/nothing"
    with (
        serving(dead_database, 1, env={"OO_ML_VAR_DIR": str(var_dir)}) as served,
        pytest.raises(urllib.error.HTTPError) as caught,
    ):
        urllib.request.urlopen(f"{served.url}/health", timeout=10)
    assert caught.value.code == 503
    assert json.loads(caught.value.read()) == {
        "ok": False,
        "database": False,
        "broker": True,
        "llm": LLM_OFF,
    }


def test_the_api_answers_503_in_its_error_shape_when_the_database_is_down():
    dead_database = "postgres://postgres@127.0.0.1:1/nothing"
    with serving(dead_database, workers=1) as served:
        request = urllib.request.Request(
            f"{served.url}/score",
            data=b'{"user_id": "u1", "candidates": [{"id": "a"}]}',
            headers={"Authorization": "Token x", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 503
    body = json.loads(caught.value.read())
    assert body["error"] == "unavailable"
    assert "retry" in body["detail"]


def test_bin_serve_collects_the_static_files_the_admin_needs(var_dir):
    """whitenoise serves the admin's files from collectstatic's manifest: without
    it the admin answers 500. bin/serve runs collectstatic before it serves."""
    dead_database = "postgres://postgres@127.0.0.1:1/nothing"
    env = {"OO_ML_VAR_DIR": str(var_dir), "SERVE_COLLECTSTATIC": "1"}
    with serving(dead_database, workers=1, env=env) as served:
        with urllib.request.urlopen(f"{served.url}/admin/login/", timeout=10) as page:
            html = page.read().decode()
        stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', html)
        assert stylesheet, html
        with urllib.request.urlopen(served.url + stylesheet[1], timeout=10) as css:
            assert css.status == 200
    assert (var_dir / "static" / "staticfiles.json").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/features/u%00x", "/stats/u%00x", "/policies/v%00/stats/u1"]
)
def test_a_nul_in_a_path_id_is_a_json_404_not_a_500(api, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_need_a_token_or_a_login(anon, url):
    assert anon.get(url).status_code == 401


@pytest.mark.django_db
def test_schema_lists_the_decision_routes(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for route in ("/score", "/reward", "/policies/{name}/stats/{user_id}", "/health"):
        assert route in paths


@pytest.mark.django_db
def test_docs_page_is_served_without_internet(staff_api):
    response = staff_api.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"cdn" not in response.content.lower()


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [("1", False, True), ("off", True, False), ("42", 7, 42), ("a, b", [], ["a", "b"])],
)
def test_env_casts_like_the_default(monkeypatch, raw, default, expected):
    monkeypatch.setenv("OO_ML_TEST_SETTING", raw)
    assert env("OO_ML_TEST_SETTING", default) == expected


@pytest.mark.parametrize(("raw", "default"), [("maybe", False), ("many", 3)])
def test_env_fails_loudly_on_a_bad_value(monkeypatch, raw, default):
    monkeypatch.setenv("OO_ML_TEST_SETTING", raw)
    with pytest.raises(ImproperlyConfigured, match="OO_ML_TEST_SETTING"):
        env("OO_ML_TEST_SETTING", default)


def test_a_body_the_view_did_not_read_is_read_before_the_answer_goes():
    """A 401 or 403 answers before the body is parsed; unread input left in the
    socket would make the server reset the connection as it closes it."""
    from django.http import HttpResponseForbidden
    from django.test import RequestFactory

    from oo_ml.middleware import BodySizeLimitMiddleware

    request = RequestFactory().post(
        "/api/simulations", data=b"x" * 5000, content_type="application/json"
    )
    response = BodySizeLimitMiddleware(lambda r: HttpResponseForbidden())(request)
    assert response.status_code == 403
    assert request.read() == b""  # nothing left


def _wsgi_get(path: str):
    """The server's application (without the rest of its process's set-up)
    called as a WSGI server would: its status, and the iterable it answered."""
    from django.core.handlers.wsgi import WSGIHandler

    from oo_ml.serving import in_memory_bodies

    statuses = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    application = in_memory_bodies(WSGIHandler())  # Django set up already
    answer = application(environ, lambda status, headers: statuses.append(status))
    return statuses[0], answer


def test_the_server_gets_a_body_in_one_piece_and_the_request_finished(settings):
    """A response held in memory goes to the server as a list of its body, the
    response already closed (Django's request_finished sent, as the server's
    close() would have); a streamed one goes as it is, for the server to walk
    and close."""
    from django.core.signals import request_finished
    from django.http import StreamingHttpResponse
    from django.urls import path

    finished = []

    def count(**kwargs):
        finished.append(True)

    urls = types.ModuleType("streaming_urls")
    urls.urlpatterns = [
        path("stream", lambda request: StreamingHttpResponse(iter([b"a", b"b"])))
    ]
    sys.modules[urls.__name__] = urls
    request_finished.connect(count)
    try:
        status, answer = _wsgi_get("/nowhere")
        assert status.startswith("404")
        assert isinstance(answer, list) and len(answer) == 1
        assert json.loads(answer[0])["error"] == "not_found"
        assert finished == [True]

        settings.ROOT_URLCONF = urls.__name__
        status, answer = _wsgi_get("/stream")
        assert status.startswith("200")
        assert not isinstance(answer, list) and finished == [True]
        assert b"".join(answer) == b"ab"
        answer.close()
        assert finished == [True, True]
    finally:
        request_finished.disconnect(count)
        del sys.modules[urls.__name__]


def test_an_error_closing_a_response_is_logged_and_the_answer_still_goes(caplog):
    """Closing a response sends request_finished, whose receivers may fail (a
    broken connection's close): the server would have logged that after
    sending the answer, so the answer goes, and the error is logged."""
    from django.core.signals import request_finished

    def fail(**kwargs):
        raise RuntimeError("closing failed")

    request_finished.connect(fail)
    try:
        status, answer = _wsgi_get("/nowhere")
    finally:
        request_finished.disconnect(fail)
    assert status.startswith("404") and json.loads(answer[0])["error"] == "not_found"
    assert "closing failed" in caplog.text


@pytest.fixture
def trimmed_signals():
    """The server process's request signals, restored afterwards."""
    from django.core.cache import close_caches
    from django.core.handlers.base import reset_urlconf
    from django.core.signals import request_finished, request_started
    from django.db import reset_queries

    from oo_ml.serving import request_signals_trim

    request_signals_trim()
    yield
    request_started.connect(reset_queries)
    request_finished.connect(close_caches)
    request_finished.connect(reset_urlconf)


@pytest.mark.django_db(transaction=True)
def test_the_server_still_ends_a_connection_past_its_age_after_a_request(
    trimmed_signals,
):
    """The server's process takes the request signals' idle receivers off, but
    not ``close_old_connections``: a connection that passes CONN_MAX_AGE during
    a request is closed when the request ends."""
    import time

    from django.core.signals import request_started
    from django.db import connection

    def age_up(**kwargs):  # after Django's own check at the request's start
        connection.close_at = time.monotonic() - 1

    connection.ensure_connection()
    request_started.connect(age_up)
    try:
        status, answer = _wsgi_get("/nowhere")
    finally:
        request_started.disconnect(age_up)
    assert status.startswith("404")
    assert connection.connection is None
