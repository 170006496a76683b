"""Token authentication for the API: hashed tokens, a short per-process cache,
and a limit on failed attempts per client address.

A token is stored only as its SHA-256 digest (``ApiToken``); a request's token
is hashed and looked up by digest. The token is on every hot request, and
re-reading it from the database each time costs a query per request: a digest
and its user are trusted for ``TOKEN_CACHE_SECONDS`` per process, so a revoked
token stops working within that. The cache is keyed by digest, so no token
value is kept in memory beyond the request that carried it.

Failed attempts are counted per client address in the shared cache (the same
count for every process and machine); past ``TOKEN_FAILURE_LIMIT`` within
``TOKEN_FAILURE_WINDOW_SECONDS``, a token the process has not already verified
is answered 429 without being looked up.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import BaseAuthentication

from oo_ml.models import ApiToken

logger = logging.getLogger(__name__)

KEYWORD = "Token"
_MAX_ENTRIES = 10_000
_cache: dict[str, tuple[float, object, ApiToken]] = {}


def token_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or with ``TRUSTED_PROXIES`` proxies in
    front, the address the outermost of them saw (counted from the right of
    X-Forwarded-For, where a client cannot forge it)."""
    proxies = settings.TRUSTED_PROXIES
    remote = request.META.get("REMOTE_ADDR", "")
    if proxies <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def _failures_key(ip: str) -> str:
    return f"oo_ml:token-failures:{ip}"


def _failures(ip: str) -> int:
    """Failed attempts from ``ip`` in the current window; 0 if the shared cache
    is unreachable (it limits brute force; it must not take the API down)."""
    try:
        return int(cache.get(_failures_key(ip)) or 0)
    except Exception:
        logger.warning("token throttle: the shared cache is unreachable", exc_info=True)
        return 0


def _failure_count(ip: str) -> None:
    key, window = _failures_key(ip), settings.TOKEN_FAILURE_WINDOW_SECONDS
    try:
        if not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:  # it expired between the two
                cache.add(key, 1, timeout=window)
    except Exception:
        logger.warning("token throttle: the shared cache is unreachable", exc_info=True)


def _authorization(request) -> bytes:
    """The Authorization header, as DRF's ``get_authorization_header`` reads it,
    but from META: it reads ``request.headers``, a dict of every header built
    for the one (under granian, of the whole process environment too)."""
    value = request.META.get("HTTP_AUTHORIZATION", b"")
    return value.encode(HTTP_HEADER_ENCODING) if isinstance(value, str) else value


class CachedTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <token>``. Another scheme is an error that says so
    (rather than "no credentials"), as is a header of the wrong shape."""

    def authenticate(self, request):
        header = _authorization(request).split()
        if not header:
            return None
        if header[0].lower() != KEYWORD.lower().encode():
            raise exceptions.AuthenticationFailed(
                "The Authorization scheme must be Token: send "
                "`Authorization: Token <token>`."
            )
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid token header: send `Authorization: Token <token>`, "
                "one token without spaces."
            )
        try:
            value = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                "Invalid token header: a token has no such characters."
            ) from None
        return self.authenticate_value(value, client_ip(request))

    def authenticate_value(self, value: str, ip: str):
        digest = token_digest(value)
        now = time.monotonic()
        hit = _cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        window = settings.TOKEN_FAILURE_WINDOW_SECONDS
        if _failures(ip) >= settings.TOKEN_FAILURE_LIMIT:
            raise exceptions.Throttled(
                wait=window,
                detail="Too many failed token authentications from this address: "
                f"retry in up to {window} seconds.",
            )
        token = ApiToken.objects.select_related("user").filter(digest=digest).first()
        if token is None or not token.user.is_active:
            _failure_count(ip)
            raise exceptions.AuthenticationFailed("Invalid token.")
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        _cache[digest] = (now + settings.TOKEN_CACHE_SECONDS, token.user, token)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return KEYWORD


class TokenScheme(OpenApiAuthenticationExtension):
    """The scheme in the OpenAPI schema, as drf-spectacular writes DRF's own."""

    target_class = CachedTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A token, prefixed by "Token ": `Token <token>`.',
        }


def token_cache_clear() -> None:
    _cache.clear()


def token_value_new() -> tuple[str, str]:
    """A new token's value (256 random bits) and the digest stored for it."""
    value = secrets.token_urlsafe(32)
    return value, token_digest(value)


def token_create(*, user, name: str = "") -> str:
    """Make a token for ``user`` and answer its value: the only time it is seen."""
    value, digest = token_value_new()
    ApiToken.objects.create(user=user, name=name, digest=digest)
    return value


@transaction.atomic
def service_token_create(*, name: str, replace: bool = False) -> str:
    """A new token for service account ``name``, creating the account if needed.

    A stored token cannot be shown again, so every call makes a new one. The
    account's earlier tokens keep working (a client using one is not cut off)
    unless ``replace``, which revokes them.
    """
    user, created = get_user_model().objects.get_or_create(username=name)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    if replace:
        ApiToken.objects.filter(user=user).delete()
    return token_create(user=user, name="service token")
