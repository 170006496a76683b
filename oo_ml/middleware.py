import contextlib
import functools

from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, ResolverMatch, URLResolver, get_resolver

from oo_ml.errors import error_body


class BodySizeLimitMiddleware:
    """Answer 413 for a body over ``MAX_BODY_BYTES`` before anything reads it;
    once a view has answered, read whatever of the body it did not."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.MAX_BODY_BYTES
        if length > limit:
            return JsonResponse(
                error_body("body_too_large", f"request body is over {limit} bytes"),
                status=413,
            )
        response = self.get_response(request)
        if length:
            # Read what the view left unread (a 401 or 403 answers before the body
            # is parsed): a server closing a socket with unread input resets the
            # connection, and the client may lose the answer.
            with contextlib.suppress(Exception):
                request.read()
        return response


class TokenApiMiddleware:
    """A call to the API that carries an ``Authorization`` header goes straight to
    its view, past the middleware below this one in ``MIDDLEWARE``.

    Those (sessions, CSRF, the session user, messages, frame options, lockouts)
    serve the admin's browser pages. A call with a token never needs them: the
    token decides who it is (or answers 401), DRF views are exempt from Django's
    CSRF check, and an answer in JSON is not framed. They cost the decision API
    about a tenth of a request's CPU (docs/performance.md). A call without the
    header (a staff member's browser session on /api/docs/, say), a path that is
    not a DRF view, or one that resolves to nothing takes the whole chain, so
    its answer is exactly as before.

    What is left of Django's own handling for the view: the resolver match on
    the request and rendering the response, as ``BaseHandler`` would do them.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.META.get("HTTP_AUTHORIZATION"):
            return self.get_response(request)
        match = _api_match(get_resolver(), request.path_info)
        if match is None:
            return self.get_response(request)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        render = getattr(response, "render", None)
        return render() if callable(render) else response


@functools.lru_cache(maxsize=1024)
def _api_match(resolver: URLResolver, path: str) -> ResolverMatch | None:
    """What ``path`` resolves to if it is a DRF view, else None (not a view of
    the API, or nothing). Remembered per path: resolving walks the admin's
    patterns and the others before the API's, 7% of a ``/reward``'s CPU in
    process (docs/performance.md). Keyed by the resolver too, which Django makes
    anew when the URLconf changes (a test's ``override_settings``)."""
    try:
        match = resolver.resolve(path)
    except Resolver404:
        return None
    return match if getattr(match.func, "cls", None) is not None else None
