from django.urls import path

from policies.apis import (
    AdminPoliciesApi,
    AdminPolicyLearningApi,
    AdminPolicyPromoteApi,
    AdminPolicyRollbackApi,
    AdminPolicyToggleApi,
    HistoryApi,
    ResetApi,
    RewardApi,
    ScoreApi,
    StatsApi,
)

V1, V2, LINUCB = "egreedy-v1", "egreedy-v2", "linucb-v1"

urlpatterns = [
    path("score", ScoreApi.as_view(), name="score"),
    path("reward", RewardApi.as_view(), name="reward"),
    path("policies/<id:name>/score", ScoreApi.as_view(), name="policy-score"),
    path("policies/<id:name>/reward", RewardApi.as_view(), name="policy-reward"),
    path(
        "policies/<id:name>/stats/<id:user_id>",
        StatsApi.as_view(),
        name="policy-stats",
    ),
    path("features/<id:user_id>", HistoryApi.as_view(), name="features"),
    path("reset/<id:user_id>", ResetApi.as_view(), name="reset"),
    path("api/admin/policies", AdminPoliciesApi.as_view(), name="admin-policies"),
    # Before <name>/…: "rollback" is not a policy.
    path(
        "api/admin/policies/rollback",
        AdminPolicyRollbackApi.as_view(),
        name="admin-policy-rollback",
    ),
    path(
        "api/admin/policies/<id:name>/promote",
        AdminPolicyPromoteApi.as_view(),
        name="admin-policy-promote",
    ),
    path(
        "api/admin/policies/<id:name>/toggle",
        AdminPolicyToggleApi.as_view(),
        name="admin-policy-toggle",
    ),
    path(
        "api/admin/policies/<id:name>/learning",
        AdminPolicyLearningApi.as_view(),
        name="admin-policy-learning",
    ),
    # Kept from the service this replaces: the recommender switches by base URL alone.
    path("score/egreedy", ScoreApi.as_view(policy_name=V1)),
    path("reward/egreedy", RewardApi.as_view(policy_name=V1)),
    path("score/egreedy/v2", ScoreApi.as_view(policy_name=V2)),
    path("reward/egreedy/v2", RewardApi.as_view(policy_name=V2)),
    path("stats/egreedy/v2/<id:user_id>", StatsApi.as_view(policy_name=V2)),
    path("stats/egreedy/<id:user_id>", StatsApi.as_view(policy_name=V1)),
    path("stats/<id:user_id>", StatsApi.as_view(policy_name=LINUCB)),
]
