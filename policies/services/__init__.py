"""Writes, by sub-domain: decisions, rewards, switches, promotion, reset and the
hybrid policies' shared models. Each is atomic and keyword-only; callers use
``from policies import services`` and the names below."""

from policies.services.decisions import decision_make
from policies.services.promotion import (
    Evidence,
    gate_margin,
    policy_promote,
    policy_rollback,
    promotion_refusal,
)
from policies.services.reset import ResetResult, user_reset
from policies.services.rewards import (
    RewardResult,
    decision_candidate,
    decision_gone,
    learned_by,
    reward_apply,
)
from policies.services.shared_models import shared_model_refit, shared_models_refit
from policies.services.switches import policy_learning_set, policy_toggle

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
