"""The profiles API: events in, profile features out. Views validate, call one
service, answer."""

from __future__ import annotations

import dataclasses

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from oo_ml.apis import ERROR, ERRORS, JsonApi
from policies.serializers import record_serializer
from profiles import services
from profiles.serializers import (
    EventInput,
    EventOutputSerializer,
    ProfileOutputSerializer,
)

EVENT_INPUT = EventInput()


class EventApi(JsonApi):
    """Store a user's reaction to a tip and bring their stored profile up to
    date with it; done, dismissed and snoozed with a ``decision_id`` also apply
    the reward the reaction implies, as /reward would: to the policy that made
    the decision and every policy that learns from live rewards. A decision
    already rewarded trains nothing more: the event is stored all the same, and
    ``reason`` says why."""

    @extend_schema(
        request=record_serializer("EventInput", EventInput),
        responses={200: EventOutputSerializer, **ERRORS},
    )
    def post(self, request):
        data = EVENT_INPUT.run_validation(request.data)
        result = services.event_record(**data)
        return Response(dataclasses.asdict(result))


class ProfileApi(JsonApi):
    """The user's profile features, current as of their last event; recomputed
    first if older than the TTL (as old events leave the 30-day window)."""

    @extend_schema(
        responses={
            200: ProfileOutputSerializer,
            404: OpenApiResponse(
                ERROR, description="A user never seen: no events and no profile."
            ),
            **{code: r for code, r in ERRORS.items() if code != 404},
        }
    )
    def get(self, request, user_id: str):
        profile = services.profile_get_fresh(user_id=user_id)
        return Response(
            {
                "user_id": profile.user_id,
                "features": profile.features,
                "computed_at": profile.computed_at,
            }
        )
