"""Secrets and transport security as production expects: no start on the
built-in key with DEBUG off, a key of the machine's own for `make run`, and
`check --deploy` clean with the settings the README gives for production."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT

# The README's production settings (section "Running it in production").
PRODUCTION = {
    "DJANGO_ALLOWED_HOSTS": "tips.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://tips.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
    "DJANGO_SESSION_COOKIE_SECURE": "true",
    "DJANGO_CSRF_COOKIE_SECURE": "true",
    "OO_ML_TRUSTED_PROXIES": "1",
}
A_KEY = "k" * 10 + "a-production-key-of-its-own-9f8e7d6c5b4a3928171605f4e3d2c1b0"


def django(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` on the platform's own settings, in a clean environment."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "OO_ML_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "oo_ml.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_debug_off_with_the_built_in_key_refuses_to_start():
    result = django("check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_an_empty_key_is_refused_too():
    result = django("check", DJANGO_SECRET_KEY="")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    "env", [{"DJANGO_SECRET_KEY": A_KEY}, {"DJANGO_DEBUG": "true"}], ids=["key", "dev"]
)
def test_a_key_of_its_own_or_debug_on_starts(env):
    result = django("check", **env)
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_the_production_settings():
    result = django(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY=A_KEY,
        **PRODUCTION,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_without_them_check_deploy_names_what_is_missing():
    bare = django("check", "--deploy", DJANGO_SECRET_KEY=A_KEY)
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in bare.stderr + bare.stdout


def test_make_runs_key_is_made_once_and_kept_private(tmp_path):
    var = tmp_path / "var"
    first = subprocess.run(
        [ROOT / "bin" / "secret-key", var], capture_output=True, text=True, check=True
    ).stdout.strip()
    again = subprocess.run(
        [ROOT / "bin" / "secret-key", var], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert first == again and len(first) >= 50
    mode = stat.S_IMODE((var / "secret-key").stat().st_mode)
    assert mode == 0o600
    started = django("check", DJANGO_SECRET_KEY=first)
    assert started.returncode == 0, started.stderr
