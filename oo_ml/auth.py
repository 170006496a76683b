"""Service-token authentication with a short per-process cache.

The token is on every hot request; re-reading it from the database each time
costs a query per request. A token and its user are trusted for
``TOKEN_CACHE_SECONDS`` per process, so a revoked token stops working within that.
"""

from __future__ import annotations

import secrets
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

_MAX_ENTRIES = 10_000
_cache: dict[str, tuple[float, object, Token]] = {}


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        now = time.monotonic()
        hit = _cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        user, token = super().authenticate_credentials(key)
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        _cache[key] = (now + settings.TOKEN_CACHE_SECONDS, user, token)
        return user, token


def token_cache_clear() -> None:
    _cache.clear()


def service_token_get_or_create(*, name: str) -> str:
    """The token of service account ``name``, creating both if needed."""
    user, created = get_user_model().objects.get_or_create(username=name)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    token, _ = Token.objects.get_or_create(
        user=user, defaults={"key": secrets.token_hex(20)}
    )
    return token.key
