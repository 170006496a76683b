import contextlib

from django.conf import settings
from django.http import JsonResponse

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
