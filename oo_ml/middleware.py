from django.conf import settings
from django.http import JsonResponse

from oo_ml.errors import error_body


class BodySizeLimitMiddleware:
    """Answer 413 for a body over ``MAX_BODY_BYTES`` before anything reads it."""

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
        return self.get_response(request)
