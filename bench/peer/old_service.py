"""
The service oo_ml replaces: a FastAPI scorer that kept each user's bandit state in JSON
files (LinUCB D=5 on /score and /reward, epsilon-greedy D=7 on /score/egreedy and
/reward/egreedy, epsilon-greedy D=12 on /score/egreedy/v2 and /reward/egreedy/v2).
Kept here, unchanged in behaviour, so benchmarks can run it side by side with oo_ml
on the same machine and the same load (bin/bench-load does). Not part of the product.

Run (from this folder; one process, as it ran in production):
      python3 -m venv .venv-old && .venv-old/bin/pip install fastapi uvicorn numpy
      STATE_DIR=$(mktemp -d) .venv-old/bin/uvicorn old_service:app --port 8700 --log-level warning
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="oO ML Serving", version="1.0.0")

STATE_DIR = Path(os.getenv("STATE_DIR", "/tmp/oo-bandit-state"))
STATE_DIR.mkdir(parents=True, exist_ok=True)

ALPHA = 1.0
D = 5
D7 = 7
D12 = 12
EPSILON = 0.1
FEATURE_HISTORY_SIZE = 100

_feature_history: dict[str, deque] = {}


def get_feature_history(user_id: str) -> deque:
    if user_id not in _feature_history:
        _feature_history[user_id] = deque(maxlen=FEATURE_HISTORY_SIZE)
    return _feature_history[user_id]


def build_feature_vector(features: dict) -> np.ndarray:
    hour = features.get("hour_of_day", 12)
    hour_sin = math.sin(2 * math.pi * hour / 24)
    hour_cos = math.cos(2 * math.pi * hour / 24)
    is_overdue = float(bool(features.get("is_overdue", False)))
    age = min(float(features.get("task_age_days", 0)), 30.0) / 30.0
    priority = (float(features.get("priority", 1)) - 1.0) / 3.0
    return np.array([hour_sin, hour_cos, is_overdue, age, priority], dtype=np.float64)


def state_path(user_id: str) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in user_id)
    return STATE_DIR / f"{safe}.json"


def load_state(user_id: str):
    p = state_path(user_id)
    if p.exists():
        raw = json.loads(p.read_text())
        return (np.array(raw["A"], dtype=np.float64), np.array(raw["b"], dtype=np.float64),
                raw.get("meta", {}))
    return np.identity(D, dtype=np.float64), np.zeros(D, dtype=np.float64), {}


def save_state(user_id: str, A, b, meta) -> None:
    state_path(user_id).write_text(json.dumps({"A": A.tolist(), "b": b.tolist(), "meta": meta}))


def build_feature_vector_7(features: dict, day_of_week: int = 0) -> np.ndarray:
    base = build_feature_vector(features)
    dow_sin = math.sin(2 * math.pi * day_of_week / 7)
    dow_cos = math.cos(2 * math.pi * day_of_week / 7)
    return np.append(base, [dow_sin, dow_cos])


def state7_path(user_id: str) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in user_id)
    return STATE_DIR / f"{safe}_egreedy.json"


def load_state7(user_id: str):
    p = state7_path(user_id)
    if p.exists():
        raw = json.loads(p.read_text())
        return (np.array(raw["A"], dtype=np.float64), np.array(raw["b"], dtype=np.float64),
                raw.get("meta", {}))
    return np.identity(D7, dtype=np.float64), np.zeros(D7, dtype=np.float64), {}


def save_state7(user_id: str, A, b, meta) -> None:
    state7_path(user_id).write_text(json.dumps({"A": A.tolist(), "b": b.tolist(), "meta": meta}))


# ── egreedy-v2 (D=12), rebuilt from ADR-0012's feature table ──────────────
def profile_dims(profile: Optional[dict], hour: int) -> list[float]:
    p = profile or {}

    def rate(k):
        v = p.get(k)
        return 0.0 if v is None else float(v)

    dwell = p.get("mean_dwell_ms_30d")
    dwell_n = 0.0 if dwell is None else min(max(float(dwell) / 600_000, 0.0), 1.0)
    pref = p.get("preferred_hour")
    align = 0.5 if pref is None else (math.cos(2 * math.pi * (float(pref) - hour) / 24) + 1) / 2
    vol = p.get("tip_volume_30d")
    vol_n = 0.0 if vol is None else min(max(math.log1p(float(vol)) / math.log1p(100), 0.0), 1.0)
    return [rate("completion_rate_30d"), rate("dismiss_rate_30d"), dwell_n, align, vol_n]


def build_feature_vector_12(features: dict, day_of_week: int, profile: Optional[dict]) -> np.ndarray:
    base = build_feature_vector_7(features, day_of_week)
    return np.append(base, profile_dims(profile, features.get("hour_of_day", 12)))


def state12_path(user_id: str) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in user_id)
    return STATE_DIR / f"{safe}_egreedy_v2.json"


def load_state12(user_id: str):
    p = state12_path(user_id)
    if p.exists():
        raw = json.loads(p.read_text())
        return (np.array(raw["A"], dtype=np.float64), np.array(raw["b"], dtype=np.float64),
                raw.get("meta", {}))
    return np.identity(D12, dtype=np.float64), np.zeros(D12, dtype=np.float64), {}


def save_state12(user_id: str, A, b, meta) -> None:
    state12_path(user_id).write_text(json.dumps({"A": A.tolist(), "b": b.tolist(), "meta": meta}))


class CandidateFeatures(BaseModel):
    hour_of_day: int = 12
    is_overdue: bool = False
    task_age_days: float = 0.0
    priority: int = 1


class Candidate(BaseModel):
    id: str
    content: str
    source: str
    source_id: Optional[str] = None
    features: CandidateFeatures = CandidateFeatures()


class Context(BaseModel):
    hour_of_day: int = 12
    day_of_week: int = 0


class ScoreRequest(BaseModel):
    user_id: str
    candidates: list[Candidate]
    context: Context = Context()
    profile_features: Optional[dict] = None


class ScoreResponse(BaseModel):
    tip_id: str
    score: float
    policy: str


class RewardRequest(BaseModel):
    user_id: str
    tip_id: str
    reward: float
    features: CandidateFeatures
    day_of_week: int = 0
    profile_features: Optional[dict] = None


class RewardResponse(BaseModel):
    ok: bool


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@app.get("/health")
def health():
    return {"ok": True}


@app.post("/score", response_model=ScoreResponse)
def score(req: ScoreRequest) -> ScoreResponse:
    if not req.candidates:
        raise HTTPException(status_code=422, detail="No candidates")
    A, b, meta = load_state(req.user_id)
    try:
        A_inv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        A_inv = np.identity(D, dtype=np.float64)
    theta = A_inv @ b
    best_id, best_score, best_features = None, -float("inf"), {}
    for c in req.candidates:
        fd = {"hour_of_day": req.context.hour_of_day, "is_overdue": c.features.is_overdue,
              "task_age_days": c.features.task_age_days, "priority": c.features.priority}
        x = build_feature_vector(fd)
        ucb = float(theta @ x) + ALPHA * math.sqrt(float(x @ A_inv @ x))
        if ucb > best_score:
            best_score, best_id, best_features = ucb, c.id, fd
    get_feature_history(req.user_id).append(
        {"ts": _now(), "features": best_features, "score": best_score, "tip_id": best_id})
    meta["pulls"] = meta.get("pulls", 0) + 1
    meta["last_updated"] = _now()
    save_state(req.user_id, A, b, meta)
    return ScoreResponse(tip_id=best_id, score=best_score, policy="linucb-v1")


@app.post("/reward", response_model=RewardResponse)
def reward(req: RewardRequest) -> RewardResponse:
    A, b, meta = load_state(req.user_id)
    x = build_feature_vector(req.features.model_dump())
    A += np.outer(x, x)
    b += req.reward * x
    meta["cumulative_reward"] = meta.get("cumulative_reward", 0.0) + req.reward
    meta["reward_count"] = meta.get("reward_count", 0) + 1
    meta["last_updated"] = _now()
    save_state(req.user_id, A, b, meta)
    return RewardResponse(ok=True)


def _egreedy_score(req: ScoreRequest, load, save, build, dim: int, policy: str) -> ScoreResponse:
    if not req.candidates:
        raise HTTPException(status_code=422, detail="No candidates")
    A, b, meta = load(req.user_id)
    try:
        A_inv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        A_inv = np.identity(dim, dtype=np.float64)
    theta = A_inv @ b
    dow = req.context.day_of_week
    exploring = np.random.random() < EPSILON
    if exploring:
        chosen = req.candidates[np.random.randint(len(req.candidates))]
        fd = {"hour_of_day": req.context.hour_of_day, "is_overdue": chosen.features.is_overdue,
              "task_age_days": chosen.features.task_age_days, "priority": chosen.features.priority}
        best_score, best_id, feat = float(theta @ build(fd, dow, req.profile_features)), chosen.id, fd
    else:
        best_id, best_score, feat = None, -float("inf"), {}
        for c in req.candidates:
            fd = {"hour_of_day": req.context.hour_of_day, "is_overdue": c.features.is_overdue,
                  "task_age_days": c.features.task_age_days, "priority": c.features.priority}
            s = float(theta @ build(fd, dow, req.profile_features))
            if s > best_score:
                best_score, best_id, feat = s, c.id, fd
    get_feature_history(req.user_id).append(
        {"ts": _now(), "features": {**feat, "day_of_week": dow, "exploring": exploring},
         "score": best_score, "tip_id": best_id, "policy": policy})
    meta["pulls"] = meta.get("pulls", 0) + 1
    meta["explore_count"] = meta.get("explore_count", 0) + int(exploring)
    meta["last_updated"] = _now()
    save(req.user_id, A, b, meta)
    return ScoreResponse(tip_id=best_id, score=best_score, policy=policy)


def _egreedy_reward(req: RewardRequest, load, save, build) -> RewardResponse:
    A, b, meta = load(req.user_id)
    x = build(req.features.model_dump(), req.day_of_week, req.profile_features)
    A += np.outer(x, x)
    b += req.reward * x
    meta["cumulative_reward"] = meta.get("cumulative_reward", 0.0) + req.reward
    meta["reward_count"] = meta.get("reward_count", 0) + 1
    meta["last_updated"] = _now()
    save(req.user_id, A, b, meta)
    return RewardResponse(ok=True)


def _b7(fd, dow, _profile):
    return build_feature_vector_7(fd, dow)


@app.post("/score/egreedy", response_model=ScoreResponse)
def score_egreedy(req: ScoreRequest) -> ScoreResponse:
    return _egreedy_score(req, load_state7, save_state7, _b7, D7, "egreedy-v1")


@app.post("/reward/egreedy", response_model=RewardResponse)
def reward_egreedy(req: RewardRequest) -> RewardResponse:
    return _egreedy_reward(req, load_state7, save_state7, _b7)


@app.post("/score/egreedy/v2", response_model=ScoreResponse)
def score_egreedy_v2(req: ScoreRequest) -> ScoreResponse:
    return _egreedy_score(req, load_state12, save_state12, build_feature_vector_12, D12, "egreedy-v2")


@app.post("/reward/egreedy/v2", response_model=RewardResponse)
def reward_egreedy_v2(req: RewardRequest) -> RewardResponse:
    return _egreedy_reward(req, load_state12, save_state12, build_feature_vector_12)


def _stats(A, b, meta, user_id, policy, labels):
    try:
        theta = (np.linalg.inv(A) @ b).tolist()
    except np.linalg.LinAlgError:
        theta = [0.0] * len(b)
    pulls = meta.get("pulls", 0)
    rc = meta.get("reward_count", 0)
    cr = meta.get("cumulative_reward", 0.0)
    return {"user_id": user_id, "policy": policy, "pulls": pulls, "reward_count": rc,
            "cumulative_reward": cr, "estimated_mean_reward": cr / rc if rc else 0.0,
            "exploration_rate": meta.get("explore_count", 0) / pulls if pulls else 0.0,
            "theta": theta, "feature_labels": labels, "last_updated": meta.get("last_updated")}


L7 = ["hour_sin", "hour_cos", "is_overdue", "task_age", "priority", "dow_sin", "dow_cos"]


@app.get("/stats/egreedy/{user_id}")
def stats_egreedy(user_id: str):
    return _stats(*load_state7(user_id), user_id, "egreedy-v1", L7)


@app.get("/stats/egreedy/v2/{user_id}")
def stats_egreedy_v2(user_id: str):
    return _stats(*load_state12(user_id), user_id, "egreedy-v2",
                  L7 + ["completion_rate_30d", "dismiss_rate_30d", "mean_dwell_norm",
                        "preferred_hour_alignment", "tip_volume_norm"])


@app.post("/reset/{user_id}", response_model=RewardResponse)
def reset(user_id: str) -> RewardResponse:
    for p in (state_path(user_id), state7_path(user_id), state12_path(user_id)):
        if p.exists():
            p.unlink()
    if user_id in _feature_history:
        _feature_history[user_id].clear()
    return RewardResponse(ok=True)


@app.get("/stats/{user_id}")
def stats(user_id: str):
    s = _stats(*load_state(user_id), user_id, "linucb-v1",
               ["hour_sin", "hour_cos", "is_overdue", "task_age", "priority"])
    s.pop("exploration_rate")
    return s


@app.get("/features/{user_id}")
def features(user_id: str):
    return {"user_id": user_id, "history": list(get_feature_history(user_id))}
