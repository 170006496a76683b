"""One exception hierarchy for domain errors, mapped to HTTP in one handler.

Every error answer has the same shape: ``{"error": code, "detail": text, "field":
path or null}``, whether it comes from a serializer, the JSON parser, auth or a
service.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(
        self, detail: str, *, field: str | None = None, code: str | None = None
    ):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code:
            self.code = code


class InvalidInput(DomainError):
    pass


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


def error_body(code: str, detail: str, field: str | None = None) -> dict:
    return {"error": code, "detail": detail, "field": field}


def first_error(detail, path: str = "") -> tuple[str | None, str, str]:
    """The first leaf of DRF's nested error detail: (field path, message, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # a list item's errors, keyed by its index
                sub = f"{path}[{key}]"
            elif key in ("non_field_errors", "detail"):
                sub = path
            else:
                sub = f"{path}.{key}" if path else key
            found = first_error(value, sub)
            if found[1]:
                return found
        return (path or None, "", "invalid")
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                found = first_error(value, f"{path}[{index}]")
                if found[1]:
                    return found
            elif value:
                return (path or None, str(value), getattr(value, "code", "invalid"))
        return (path or None, "", "invalid")
    return (path or None, str(detail), getattr(detail, "code", "invalid"))


def exception_handler(exc, context):
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down or the connection broke: retry later, not a bug.
        logger.warning("database unavailable: %s", exc)
        exc = Unavailable("The database is unavailable; retry shortly.")
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.detail, exc.field), status=exc.status_code
        )
    if isinstance(exc, exceptions.ValidationError):
        field, message, code = first_error(exc.detail)
        return Response(
            error_body(code, message, field), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, exceptions.ParseError):
        return Response(
            error_body("invalid_json", str(exc.detail)),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(code, str(exc.detail))
    return response


def page_not_found(request, exception):
    """JSON for API callers; the admin keeps Django's own page."""
    if request.path.startswith("/admin/"):
        return defaults.page_not_found(request, exception)
    return JsonResponse(
        error_body("not_found", f"No route {request.path}."), status=404
    )


def server_error(request):
    """JSON for API callers; the admin keeps Django's own page."""
    if request.path.startswith("/admin/"):
        return defaults.server_error(request)
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side."), status=500
    )
