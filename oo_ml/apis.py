"""What every app's API shares: the JSON-only base view, the error schema, and
the health check."""

import orjson
from django.db import connection
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from oo_ml.llm import llm_off_reason
from oo_ml.negotiation import JsonOnlyNegotiation
from oo_ml.selectors import broker_reachable, database_reachable

# Every error answers in this shape (oo_ml.errors maps domain errors to it).
ERROR = inline_serializer(
    "Error",
    {
        "error": serializers.CharField(),
        "detail": serializers.CharField(),
        "field": serializers.CharField(allow_null=True),
    },
)
ERRORS = {
    code: OpenApiResponse(ERROR)
    for code in (400, 401, 403, 404, 409, 413, 415, 429, 503)
}


# Its docstring describes, in the OpenAPI schema, each view that has none.
class JsonApi(APIView):
    """The decision API's views: JSON only, so no content negotiation."""

    content_negotiation_class = JsonOnlyNegotiation


def json_answer(body: dict) -> HttpResponse:
    """A 200 with ``body`` in JSON, for the hot routes: what DRF's Response and
    JSONRenderer answer (the same JSON for plain values, UUIDs and numpy
    numbers), written by orjson without a template response's set-up, a
    sixth of the cost (docs/performance.md). Errors still answer through DRF."""
    return HttpResponse(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        content_type="application/json",
    )


HEALTH = inline_serializer(
    "Health",
    {
        "ok": serializers.BooleanField(),
        "database": serializers.BooleanField(),
        "broker": serializers.BooleanField(
            help_text="Whether the broker can take a message now."
        ),
        "llm": inline_serializer(
            "HealthLlm",
            {
                "configured": serializers.BooleanField(
                    help_text="Whether an LLM is configured for the llm judge and "
                    "/generate (it is not called here)."
                ),
                "detail": serializers.CharField(
                    allow_null=True, help_text="Why they are off; null when on."
                ),
            },
        ),
    },
)


class HealthApi(APIView):
    """Liveness for load balancers: 503 when the database cannot be reached."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HEALTH, 503: HEALTH})
    def get(self, request):
        database = database_reachable(connection)
        broker = broker_reachable()
        off = llm_off_reason()
        body = {
            "ok": database and broker,
            "database": database,
            "broker": broker,
            "llm": {"configured": off is None, "detail": off},
        }
        return Response(body, status=200 if database else 503)
