"""The simulations API, for staff: start a run on the workers, read how it went."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from oo_ml.apis import ERRORS, JsonApi
from oo_ml.errors import InvalidInput
from oo_ml.negotiation import JsonOnlyNegotiation
from oo_ml.permissions import RUN_START, RUN_VIEW, StaffMay
from simulations import selectors, services
from simulations.serializers import (
    RUN_INPUT_SCHEMA,
    RunDetailSerializer,
    RunSerializer,
    run_input,
)


class RunPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class SimulationsApi(generics.ListAPIView):
    """Runs, newest first (GET); start one on the Celery workers (POST)."""

    content_negotiation_class = JsonOnlyNegotiation
    permission_classes = [StaffMay]
    actions_by_method = {"GET": RUN_VIEW, "POST": RUN_START}
    pagination_class = RunPagination
    serializer_class = RunSerializer

    def get_queryset(self):
        return selectors.run_list()

    @extend_schema(responses={200: RunSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=RUN_INPUT_SCHEMA,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Any text up to 200 printable ASCII characters: a "
                "retry with the same key (by the same account, with the same "
                "body) answers the run the first request started.",
            )
        ],
        responses={202: RunDetailSerializer, **ERRORS},
        description="Validates the run, records it with its chunks, and hands it "
        "to the workers (one task, which a worker fans out into one per chunk) "
        "once that is committed. Poll the run's `links.self` for progress and "
        "results. 503 when the broker cannot take it: nothing is kept.",
    )
    def post(self, request, *args, **kwargs):
        arguments = run_input(request.data)
        run, _ = services.run_launch(
            **arguments,
            actor=request.user,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        body = RunDetailSerializer(run).data
        return Response(body, status=202, headers={"Location": body["links"]["self"]})


class SimulationApi(JsonApi):
    """One run: status, progress, timings, error, and results once finished."""

    permission_classes = [StaffMay]
    actions_by_method = {"GET": RUN_VIEW}

    @extend_schema(responses={200: RunDetailSerializer, **ERRORS})
    def get(self, request, run_id: str):
        try:
            run_id = uuid.UUID(run_id)
        except ValueError:
            raise InvalidInput(f"{run_id!r} is not a run id.", field="id") from None
        run = selectors.run_get(run_id=run_id)
        return Response(RunDetailSerializer(run).data)
