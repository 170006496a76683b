"""The decision API. Each view validates, calls one service or selector, answers."""

from __future__ import annotations

import os

import numpy as np
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from oo_ml.apis import ERRORS, JsonApi, json_answer
from oo_ml.permissions import POLICY_CHANGE, POLICY_VIEW, USER_RESET, StaffMay
from policies import gate, selectors, services
from policies.serializers import (
    DecisionOutputSerializer,
    LearningInput,
    PolicyOutputSerializer,
    RewardInput,
    RewardOutputSerializer,
    ScoreInput,
    StatsOutputSerializer,
    ToggleInput,
    record_serializer,
)
from profiles.services import SCORING_PROFILE

SCORE_INPUT = ScoreInput()
REWARD_INPUT = RewardInput()
TOGGLE_INPUT = ToggleInput()
LEARNING_INPUT = LearningInput()


_rng: np.random.Generator | None = None


def request_rng() -> np.random.Generator:
    """The worker process's generator for live decisions.

    Seeded from the OS once per process, and again in a forked child (a server's
    workers never share a stream): seeding a new one per request read OS entropy
    every time. numpy's generators lock their state, so threads may share it.
    """
    global _rng
    if _rng is None:
        _rng = np.random.default_rng()
    return _rng


def _rng_forget() -> None:
    global _rng
    _rng = None


os.register_at_fork(after_in_child=_rng_forget)


def decision_answer(decision) -> dict:
    """/score's answer, in DecisionOutputSerializer's shape (which documents it).

    Built by hand: on the hottest route a serializer's per-request field copies
    cost more than the answer is worth (docs/performance.md).
    """
    return {
        "tip_id": decision.tip_id,
        "score": decision.score,
        "policy": decision.policy.name,
        "decision_id": str(decision.id),
        "propensity": decision.propensity,
        "exploring": decision.exploring,
    }


class ScoreApi(JsonApi):
    """Pick one candidate. Named routes ask one policy; /score asks the active one."""

    policy_name: str | None = None

    @extend_schema(
        request=record_serializer("ScoreInput", ScoreInput),
        responses={200: DecisionOutputSerializer, **ERRORS},
    )
    def post(self, request, name: str | None = None):
        data = SCORE_INPUT.run_validation(request.data)
        decision = services.decision_make(
            user_id=data["user_id"],
            candidates=data["candidates"],
            context=data["context"],
            profile=data["profile_features"],
            rng=request_rng(),
            policy_name=name or self.policy_name,
            stored_profile=SCORING_PROFILE,
        )
        return json_answer(decision_answer(decision))


class RewardApi(JsonApi):
    """Apply a reward to the decision's policy, a named policy, or the active one.

    Unless the route names a policy, every policy that learns from live rewards
    learns it too, on its own encoding of the rewarded candidate (``learned_by``).
    ``reward`` lies in [OO_ML_REWARD_MIN, OO_ML_REWARD_MAX], default [-1, 1]. A
    decision takes one reward: a later, different one answers 409
    ``already_rewarded`` (unless OO_ML_REWARD_AGGREGATION=sum). A repeated
    ``event_id`` answers as a replay and changes nothing.
    """

    policy_name: str | None = None

    @extend_schema(
        request=record_serializer("RewardInput", RewardInput),
        responses={200: RewardOutputSerializer, **ERRORS},
    )
    def post(self, request, name: str | None = None):
        data = REWARD_INPUT.run_validation(request.data)
        name = name or self.policy_name
        result = services.reward_apply(
            user_id=data["user_id"],
            tip_id=data["tip_id"],
            reward=data["reward"],
            features=data["features"],
            day_of_week=data["day_of_week"],
            profile=data["profile_features"],
            decision_id=data["decision_id"],
            event_id=data["event_id"],
            policy_name=name,
        )
        # Its fields hold plain values: no deep copy (dataclasses.asdict's).
        return json_answer({name: getattr(result, name) for name in result.__slots__})


class StatsApi(JsonApi):
    policy_name: str | None = None

    @extend_schema(responses={200: StatsOutputSerializer, **ERRORS})
    def get(self, request, user_id: str, name: str | None = None):
        policy = selectors.policy_get(name=name or self.policy_name)
        stats = selectors.user_stats(policy=policy, user_id=user_id)
        return Response(StatsOutputSerializer(stats).data)


class HistoryApi(JsonApi):
    @extend_schema(
        responses={
            200: inline_serializer(
                "History",
                {
                    "user_id": serializers.CharField(),
                    "history": serializers.ListField(),
                },
            ),
            **ERRORS,
        }
    )
    def get(self, request, user_id: str):
        history = selectors.user_history(user_id=user_id)
        return Response({"user_id": user_id, "history": history})


class ResetApi(JsonApi):
    permission_classes = [StaffMay]
    actions_by_method = {"POST": USER_RESET}

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "Reset",
                {
                    "user_id": serializers.CharField(),
                    "states_deleted": serializers.IntegerField(),
                    "decisions_deleted": serializers.IntegerField(),
                },
            ),
            **ERRORS,
        },
    )
    def post(self, request, user_id: str):
        result = services.user_reset(user_id=user_id, actor=request.user)
        return Response(
            {
                "user_id": result.user_id,
                "states_deleted": result.states_deleted,
                "decisions_deleted": result.decisions_deleted,
            }
        )


class AdminPoliciesApi(JsonApi):
    """Every policy, for staff (the control room over REST)."""

    permission_classes = [StaffMay]
    actions_by_method = {"GET": POLICY_VIEW}

    @extend_schema(
        responses={
            200: inline_serializer(
                "Policies", {"policies": PolicyOutputSerializer(many=True)}
            ),
            **ERRORS,
        }
    )
    def get(self, request):
        policies = selectors.policy_list()
        return Response({"policies": PolicyOutputSerializer(policies, many=True).data})


class AdminPolicyToggleApi(JsonApi):
    """Turn a shadow on or off; an empty body flips it. Recorded in its history."""

    permission_classes = [StaffMay]
    actions_by_method = {"POST": POLICY_CHANGE}

    @extend_schema(
        request=record_serializer("ToggleInput", ToggleInput),
        responses={200: PolicyOutputSerializer, **ERRORS},
    )
    def post(self, request, name: str):
        data = TOGGLE_INPUT.run_validation(request.data)
        policy = services.policy_toggle(
            name=name, actor=request.user, enabled=data["enabled"]
        )
        return Response(PolicyOutputSerializer(policy).data)


class AdminPolicyLearningApi(JsonApi):
    """Turn a policy's learning from live rewards on or off; an empty body flips
    it. Recorded in its history."""

    permission_classes = [StaffMay]
    actions_by_method = {"POST": POLICY_CHANGE}

    @extend_schema(
        request=record_serializer("LearningInput", LearningInput),
        responses={200: PolicyOutputSerializer, **ERRORS},
    )
    def post(self, request, name: str):
        data = LEARNING_INPUT.run_validation(request.data)
        policy = services.policy_learning_set(
            name=name, actor=request.user, learns_live=data["learns_live"]
        )
        return Response(PolicyOutputSerializer(policy).data)


class AdminPolicyPromoteApi(JsonApi):
    """Make a shadow the active policy, behind the simulation gate (docs/promotion.md).

    409 with the reason when no finished simulation ran it beside the active
    policy, or when it did worse there.
    """

    permission_classes = [StaffMay]
    actions_by_method = {"POST": POLICY_CHANGE}

    @extend_schema(request=None, responses={200: PolicyOutputSerializer, **ERRORS})
    def post(self, request, name: str):
        policy = services.policy_promote(
            name=name,
            actor=request.user,
            evidence_for=gate.promotion_evidence,
        )
        return Response(PolicyOutputSerializer(policy).data)


class AdminPolicyRollbackApi(JsonApi):
    """Undo the latest promotion: the previous active policy is active again."""

    permission_classes = [StaffMay]
    actions_by_method = {"POST": POLICY_CHANGE}

    @extend_schema(request=None, responses={200: PolicyOutputSerializer, **ERRORS})
    def post(self, request):
        policy = services.policy_rollback(actor=request.user)
        return Response(PolicyOutputSerializer(policy).data)
