"""What the web server's process sets up around Django's application:
``oo_ml/wsgi.py`` applies it at start-up. Nothing here acts on import, so a
test can call each part on its own."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def in_memory_bodies(django_application):
    """``django_application``, answering a response held in memory as a list of
    its one body: the server then sends those bytes at once, where it walks an
    iterator otherwise (granian: its ``response_iter``; 0.98x a ``/score``'s
    CPU, 1.04x its rate, docs/performance.md). The response is closed first, as
    the server would after sending it (Django's ``request_finished``): an error
    there is logged, as the server would, and the answer still goes. A streamed
    or file response goes as it is, for the server to walk and close."""

    def application(environ, start_response):
        response = django_application(environ, start_response)
        if getattr(response, "streaming", True):
            return response
        body = response.content
        try:
            response.close()
        except Exception:
            logger.exception("closing the response of %s", environ.get("PATH_INFO"))
        return [body]

    return application


def request_signals_trim() -> None:
    """Disconnect from Django's request signals the receivers that have nothing
    to do in a server's process, 5-8 µs a request each (0.97x a ``/reward``'s
    CPU under load, docs/performance.md):

    - ``reset_queries``: Django logs queries only with DEBUG on;
    - ``close_caches``: when every cache's ``close()`` is the base one, which
      does nothing (the database and Redis caches);
    - ``reset_urlconf``: every request sets the URLconf as it starts, and
      nothing in the server's process reads it between requests.

    ``close_old_connections`` stays: it ends a connection past its age, or one
    an error left unusable.
    """
    from django.conf import settings
    from django.core.cache import BaseCache, caches, close_caches
    from django.core.handlers.base import reset_urlconf
    from django.core.signals import request_finished, request_started
    from django.db import reset_queries

    if not settings.DEBUG:
        request_started.disconnect(reset_queries)
    if all(type(caches[alias]).close is BaseCache.close for alias in settings.CACHES):
        request_finished.disconnect(close_caches)
    request_finished.disconnect(reset_urlconf)
