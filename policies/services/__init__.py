"""Writes, by sub-domain: decisions, rewards, switches, promotion, reset and the
hybrid policies' shared models. Each is atomic and keyword-only; callers use
``from policies import services`` and the names below."""

from policies.services.rewards import (
    Evidence,
    ResetResult,
    RewardResult,
    decision_candidate,
    decision_gone,
    decision_make,
    gate_margin,
    learned_by,
    policy_learning_set,
    policy_promote,
    policy_rollback,
    policy_toggle,
    promotion_refusal,
    reward_apply,
    shared_model_refit,
    shared_models_refit,
    user_reset,
)

__all__ = [
    "Evidence",
    "ResetResult",
    "RewardResult",
    "decision_candidate",
    "decision_gone",
    "decision_make",
    "gate_margin",
    "learned_by",
    "policy_learning_set",
    "policy_promote",
    "policy_rollback",
    "policy_toggle",
    "promotion_refusal",
    "reward_apply",
    "shared_model_refit",
    "shared_models_refit",
    "user_reset",
]
