"""Leave exactly N shadows switched on in the bench database (bin/bench-load).

The registry has one shadow (egreedy-v2, D=12); more are made as copies with
other algorithms and dimensions, so N shadows cost what N real ones would.

    DATABASE_URL=postgres://postgres@127.0.0.1/oo_ml_bench python bench/shadows.py 2
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
# A key of this run's own: the app refuses its built-in one with DEBUG off.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

import django  # noqa: E402

django.setup()

from policies.models import Policy, Role  # noqa: E402

# The registry's shadow first, then copies: LinUCB over 12 features, then more.
EXTRA = [
    ("bench-linucb-12", "linucb", 12, {"alpha": 1.0}),
    ("bench-egreedy-7", "egreedy", 7, {"epsilon": 0.1}),
    ("bench-linucb-7", "linucb", 7, {"alpha": 0.5}),
]


def main(count: int) -> None:
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
