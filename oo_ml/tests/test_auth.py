"""Tokens and logins as production expects: a token is stored only as its
digest and shown once; failed tokens are throttled per address in the shared
cache; admin logins lock out a username from an address after 10 failures."""

from __future__ import annotations

import datetime as dt
import importlib

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from oo_ml.auth import token_cache_clear, token_create, token_digest
from oo_ml.models import ApiToken

pytestmark = pytest.mark.django_db


def every_stored_text() -> str:
    """Every row of every table, as text: what a dump of the database holds."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def client_with(token: str, ip: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


# --- tokens stored hashed -------------------------------------------------------


def test_the_token_value_is_nowhere_in_the_database(capsys, staff_user):
    call_command("service_token", "recommender")
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    staff_token = token_create(user=staff_user)

    assert client_with(printed).get("/features/u1").status_code != 401
    assert client_with(staff_token).get("/api/admin/policies").status_code == 200
    dump = every_stored_text()
    for value in (printed, staff_token):
        assert value not in dump
        assert token_digest(value) in dump  # what is kept instead
    assert ApiToken.objects.count() == 2


def test_the_admin_shows_a_new_token_once_and_never_again(client, staff_user):
    client.force_login(staff_user)
    service = get_user_model().objects.create_user(username="svc", password=None)
    response = client.post(
        "/admin/oo_ml/apitoken/add/",
        {"user": service.pk, "name": "reporting"},
        follow=True,
    )
    assert response.status_code == 200
    (message,) = [m for m in map(str, response.context["messages"]) if "copy" in m]
    value = message.split(": ", 1)[1].split(" ", 1)[0]
    token = ApiToken.objects.get(user=service)
    assert token.digest == token_digest(value)
    assert client_with(value).get("/features/u1").status_code != 401

    for page in (
        "/admin/oo_ml/apitoken/",
        f"/admin/oo_ml/apitoken/{token.pk}/change/",
    ):
        shown = client.get(page)
        assert shown.status_code == 200
        assert value.encode() not in shown.content
        assert token.digest.encode() not in shown.content


def test_a_revoked_token_stops_working(staff_user):
    value = token_create(user=staff_user)
    assert client_with(value).get("/api/admin/policies").status_code == 200
    ApiToken.objects.all().delete()
    token_cache_clear()  # as every process does within TOKEN_CACHE_SECONDS
    assert client_with(value).get("/api/admin/policies").status_code == 401


def test_an_inactive_accounts_token_is_refused(staff_user):
    value = token_create(user=staff_user)
    get_user_model().objects.filter(pk=staff_user.pk).update(is_active=False)
    assert client_with(value).get("/api/admin/policies").status_code == 401


def test_tokens_drf_kept_in_plain_text_become_hashed_and_keep_working(staff_user):
    migration = importlib.import_module(
        "oo_ml.migrations.0002_hash_old_tokens_and_cache_table"
    )
    old = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
            "user_id integer NOT NULL, created timestamptz NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, now())", [old, staff_user.pk]
        )
    with connection.schema_editor() as editor:
        migration.hash_old_tokens(apps, editor)

    assert old not in every_stored_text()
    assert client_with(old).get("/api/admin/policies").status_code == 200


# --- failed tokens throttled per address ----------------------------------------


def test_failed_tokens_are_throttled_per_address(settings, service_token):
    settings.TOKEN_FAILURE_LIMIT = 5
    attacker = "203.0.113.7"
    for attempt in range(5):
        response = client_with(f"guess-{attempt}", ip=attacker).get("/features/u1")
        assert response.status_code == 401
    throttled = client_with("guess-5", ip=attacker).get("/features/u1")
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "throttled"
    assert int(throttled["Retry-After"]) == settings.TOKEN_FAILURE_WINDOW_SECONDS
    # Not even a right token is looked up from there: guessing it gains nothing.
    right = client_with(service_token, ip=attacker).get("/features/u1")
    assert right.status_code == 429
    # Other addresses are not held back.
    other = client_with(service_token, ip="198.51.100.2").get("/features/u1")
    assert other.status_code not in (401, 429)


def test_a_token_already_verified_is_not_held_back(settings, service_token):
    settings.TOKEN_FAILURE_LIMIT = 3
    shared = "192.0.2.10"  # one NAT: the recommender and a guesser behind it
    assert client_with(service_token, ip=shared).get("/features/u1").status_code != 401
    for attempt in range(4):
        client_with(f"guess-{attempt}", ip=shared).get("/features/u1")
    assert client_with("guess", ip=shared).get("/features/u1").status_code == 429
    assert client_with(service_token, ip=shared).get("/features/u1").status_code != 429


def test_behind_proxies_the_address_is_the_one_they_saw(settings):
    settings.TOKEN_FAILURE_LIMIT = 2
    settings.TRUSTED_PROXIES = 1
    proxy = "10.0.0.1"

    def guess(client_address: str, forged: str = "1.2.3.4"):
        client = client_with("guess", ip=proxy)
        # The proxy appends what it saw to whatever the client sent.
        header = f"{forged}, {client_address}"
        return client.get("/features/u1", HTTP_X_FORWARDED_FOR=header)

    assert guess("203.0.113.1").status_code == 401
    assert guess("203.0.113.1", forged="5.6.7.8").status_code == 401
    assert guess("203.0.113.1").status_code == 429  # a forged header changes nothing
    assert guess("203.0.113.2").status_code == 401


def test_the_counts_live_in_the_shared_database_cache(settings):
    """The default cache outside the tests: one count for every process."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "oo_ml_cache",
        }
    }
    call_command("createcachetable", verbosity=0)  # as oo_ml's migration does
    settings.TOKEN_FAILURE_LIMIT = 2
    for _ in range(2):
        response = client_with("guess", ip="203.0.113.9").get("/features/u")
        assert response.status_code == 401
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM oo_ml_cache")
        assert cursor.fetchone()[0] == 1
    assert client_with("guess", ip="203.0.113.9").get("/features/u").status_code == 429
    caches["default"].clear()


# --- admin logins locked out ----------------------------------------------------


@pytest.fixture
def ops(settings):
    """A superuser "ops"; passwords hashed fast, as these tests try many."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return get_user_model().objects.create_superuser("ops", password="a-long-password")


def login(password: str, ip: str = "203.0.113.5", username: str = "ops"):
    return Client(REMOTE_ADDR=ip).post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
    )


def test_ten_wrong_passwords_lock_the_username_out_from_that_address(ops):
    for attempt in range(9):
        assert login(f"wrong-{attempt}").status_code == 200  # the form again
    assert login("wrong-9").status_code == 429  # the tenth
    locked = login("a-long-password")
    assert locked.status_code == 429  # even the right one now
    assert b"too many login attempts" in locked.content.lower()
    # The same account from elsewhere, and another account from there, still log in.
    assert login("a-long-password", ip="198.51.100.9").status_code == 302
    get_user_model().objects.create_superuser("ops2", password="another-password")
    assert login("another-password", username="ops2").status_code == 302


def test_the_lockout_ends_fifteen_minutes_after_the_last_failure(ops):
    from axes.models import AccessAttempt

    for attempt in range(10):
        login(f"wrong-{attempt}")
    assert login("a-long-password").status_code == 429
    AccessAttempt.objects.update(
        attempt_time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=15, seconds=5)
    )
    assert login("a-long-password").status_code == 302
