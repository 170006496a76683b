"""Set up the bench database's policies for bin/bench-load.

Leaves exactly N shadows switched on (the registry has one, egreedy-v2, D=12;
more are made as copies with other algorithms and dimensions, so N shadows cost
what N real ones would); optionally makes another policy active (``--active``,
bypassing the promotion gate: a benchmark's set-up, not a promotion) and sets which
policies learn from live rewards (``--learning``, a comma-separated list; the rest
stop learning; ``none`` for no policy).

    DATABASE_URL=postgres://postgres@127.0.0.1/oo_ml_bench \\
        python bench/configure.py --shadows 1 --active hybrid-v1 --learning egreedy-v2

BENCH_APP_DIR names the code to import (default: this checkout), so the same
script sets up a database served by another version of oo_ml.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

APP_DIR = os.environ.get("BENCH_APP_DIR") or str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, APP_DIR)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
# A key of this run's own: the app refuses its built-in one with DEBUG off.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from policies.models import Policy, Role  # noqa: E402

# The registry's shadow first, then copies: LinUCB over 12 features, then more.
EXTRA = [
    ("bench-linucb-12", "linucb", 12, {"alpha": 1.0}),
    ("bench-egreedy-7", "egreedy", 7, {"epsilon": 0.1}),
    ("bench-linucb-7", "linucb", 7, {"alpha": 0.5}),
]


def active_set(name: str) -> None:
    """``name`` active, the policy active before it a shadow switched off."""
    with transaction.atomic():
        new = Policy.objects.select_for_update().get(name=name)
        if new.role == Role.ACTIVE:
            return
        Policy.objects.filter(role=Role.ACTIVE).update(role=Role.SHADOW, enabled=False)
        Policy.objects.filter(pk=new.pk).update(role=Role.ACTIVE, enabled=False)
    print("active:", name)


def shadows_set(count: int) -> None:
    for name, algorithm, dimension, params in EXTRA[: max(0, count - 1)]:
        Policy.objects.get_or_create(
            name=name,
            defaults={
                "algorithm": algorithm,
                "dimension": dimension,
                "params": params,
                "role": Role.SHADOW,
            },
        )
    shadows = sorted(
        Policy.objects.filter(role=Role.SHADOW),
        key=lambda p: (p.name != "egreedy-v2", p.name.startswith("bench-"), p.id),
    )
    if count > len(shadows):
        raise SystemExit(f"at most {len(shadows)} shadows, not {count}")
    for index, policy in enumerate(shadows):
        Policy.objects.filter(pk=policy.pk).update(enabled=index < count)
    print("shadows on:", ", ".join(p.name for p in shadows[:count]) or "none")


def learning_set(names: list[str]) -> None:
    unknown = set(names) - set(Policy.objects.values_list("name", flat=True))
    if unknown:
        raise SystemExit(f"no such policy: {', '.join(sorted(unknown))}")
    Policy.objects.update(learns_live=False)
    Policy.objects.filter(name__in=names).update(learns_live=True)
    print("learning from live rewards:", ", ".join(names) or "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=0)
    parser.add_argument("--active", help="the policy to make active")
    parser.add_argument(
        "--learning", help="policies learning from live rewards, comma-separated"
    )
    args = parser.parse_args()
    if args.active:
        active_set(args.active)
    shadows_set(args.shadows)
    if args.learning is not None:
        learning_set([n for n in args.learning.split(",") if n and n != "none"])


if __name__ == "__main__":
    main()
