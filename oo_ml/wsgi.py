"""The web server's entry point (bin/serve: ``oo_ml.wsgi:application``)."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
django_application = get_wsgi_application()


def _request_signals_trim() -> None:
    """Disconnect from Django's request signals the receivers that have nothing
    to do in a server's process, 5-8 µs a request each (together 0.97x the
    CPU of a ``/reward`` under load, docs/performance.md):

    - ``reset_queries``: Django logs queries only with DEBUG on (a test's
      query capture connects it again while it counts);
    - ``close_caches``: when every cache's ``close()`` is the base one, which
      does nothing (the database and Redis caches);
    - ``reset_urlconf``: every request sets the URLconf as it starts, and
      nothing in this process reads it between requests.

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


_request_signals_trim()


def application(environ, start_response):
    """Django's application, answering a response held in memory as a list of
    its one body: the server then sends those bytes at once, where it walks an
    iterator otherwise (granian: its ``response_iter``, 2% of a ``/score``'s CPU
    and 4% of its rate, docs/performance.md). Closed first, as the server would
    after sending it. A streamed or file response goes as it is."""
    response = django_application(environ, start_response)
    if getattr(response, "streaming", True):
        return response
    try:
        return [response.content]
    finally:
        response.close()


# The garbage collector, tuned for a process that serves short requests. What
# start-up loaded (Django, the apps, their modules: about 100,000 objects) lives
# as long as the process, so it is frozen out of the collector's full passes,
# which otherwise walked all of it every few thousand requests (65 ms a pass).
# A request's own objects are freed by their reference counts; collecting the
# young generation every 10,000 allocations instead of 700 leaves less to pass
# over. Together: about 40% less time collecting, and full passes a fifth as
# often and a third as long (docs/performance.md).
gc.freeze()
gc.set_threshold(10_000, 20, 20)
