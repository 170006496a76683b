"""The two pages outside the API and the admin: ``/`` and its icon."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.templatetags.static import static


def home(request: HttpRequest) -> TemplateResponse:
    """A small landing page: where the admin, the API docs and /health are."""
    return TemplateResponse(request, "oo_ml/home.html")


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask /favicon.ico of pages without an icon link (the API's)."""
    return HttpResponseRedirect(static("oo_ml/favicon.svg"))
