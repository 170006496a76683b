"""What every app's API shares: the JSON-only base view, the error schema, and
the health check."""

from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

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


HEALTH = inline_serializer(
    "Health",
    {
        "ok": serializers.BooleanField(),
        "database": serializers.BooleanField(),
        "broker": serializers.BooleanField(
            help_text="Whether the broker can take a message now."
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
        body = {"ok": database and broker, "database": database, "broker": broker}
        return Response(body, status=200 if database else 503)
