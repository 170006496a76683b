"""Summarise a ``py-spy record --format raw`` file of gunicorn workers under load.

Each line of the file is a collapsed stack, root first, and a sample count. This
prints where the samples' innermost frames were (by package) and the inclusive
share of the steps that matter on the hot path. bin/bench-load records with
``--gil``: only samples holding the GIL, i.e. where the workers spend Python CPU;
without it, a worker blocked on PostgreSQL may still be sampled in psycopg.
Standard library only.

    python bench/pyspy_summary.py bench/results/<stamp>/score.pyspy.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# The package a frame belongs to, by the first pattern its text matches.
PACKAGES = (
    ("psycopg", "psycopg (adapting, sending, loading rows)"),
    ("rest_framework/fields", "DRF fields (building, validating)"),
    ("rest_framework/serializers", "DRF serializers"),
    ("rest_framework", "DRF views, auth, parsing, rendering"),
    ("django/db/models/sql", "Django ORM: compiling SQL"),
    ("django/db", "Django ORM: models, querysets, backend"),
    ("django", "Django: request, middleware, urls"),
    ("gunicorn", "gunicorn (accept, parse, write)"),
    ("numpy", "numpy"),
    ("json/", "json"),
    ("policies/", "policies (app code)"),
    ("oo_ml/", "oo_ml (app code)"),
    ("whitenoise", "whitenoise"),
    ("copy.py", "copy.deepcopy (DRF field cloning)"),
)

# Inclusive steps: a sample counts if any frame of its stack matches.
STEPS = (
    ("gunicorn handle_request", r"handle_request \(gunicorn"),
    ("Django WSGIHandler (middleware + view)", r"__call__ \(django/core/handlers/wsgi"),
    ("DRF dispatch", r"dispatch \(rest_framework/views"),
    ("DRF initial (auth, permissions)", r"initial \(rest_framework/views"),
    ("our view's post()", r"\.post \(policies/apis"),
    ("request body parsing", r"_parse \(rest_framework/request"),
    ("input validation", r"run_validation \(|is_valid \(rest_framework"),
    ("output serializer .data", r"data \(rest_framework/serializers"),
    ("response rendering", r"rendered_content \(rest_framework/response"),
    ("selectors.scoring_states", r"scoring_states \(policies/selectors"),
    ("selectors.policy_get_active", r"policy_get_active \(policies/selectors"),
    ("services.decision_make", r"decision_make \(policies/services"),
    ("services.reward_apply", r"reward_apply \(policies/services"),
    ("rewards._states_read", r"_states_read \(policies/services"),
    ("oo_ml.db.rows_insert", r"rows_insert \(oo_ml/db"),
    ("QuerySet.bulk_create", r"bulk_create \(django/db/models/query"),
    ("Model.save", r"save \(django/db/models/base"),
    ("Model.__init__", r"__init__ \(django/db/models/base"),
    ("ORM SQL compilation (as_sql)", r"as_sql \(django/db/models/sql/compiler"),
    ("opening a cursor", r"(^|\.)cursor \(django/db/backends/base/base"),
    ("psycopg execute", r"execute \(psycopg/cursor"),
    ("transaction.atomic enter/exit", r"__(enter|exit)__ \(django/db/transaction"),
    ("numpy (any)", r"\(numpy/"),
    ("bandits (any)", r"\(policies/bandits"),
    ("json (any)", r"\(json/"),
)
# Derived: the part of the first step not inside the second.
OUTSIDE = (
    ("gunicorn outside Django (accept, parse, write, close)", 0, 1),
    ("Django + DRF around our view (middleware, urls, DRF)", 1, 4),
)


def package(frame: str) -> str:
    for pattern, name in PACKAGES:
        if pattern in frame:
            return name
    return "other (stdlib, interpreter)"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=15, help="innermost frames shown")
    args = parser.parse_args(argv)

    stacks = load(args.file)
    total = sum(count for _, count in stacks)
    if not total:
        print(f"{args.file}: no samples", file=sys.stderr)
        return 2
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = frames[-1]
        leaves[leaf] += count
        # Charge a sample to the innermost frame that is not the interpreter's own.
        packages[package(leaf)] += count

    print(f"{args.file}: {total} samples")
    print("-- innermost frame by package")
    for name, count in packages.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print("-- inclusive share of steps")
    shares = []
    for label, pattern in STEPS:
        regex = re.compile(pattern)
        count = sum(c for frames, c in stacks if any(regex.search(f) for f in frames))
        shares.append(count / total)
        if count:
            print(f"  {count / total:6.1%}  {label}")
    for label, outer, inner in OUTSIDE:
        if shares[outer]:
            print(f"  {shares[outer] - shares[inner]:6.1%}  {label}")
    print(f"-- top {args.top} innermost frames")
    for leaf, count in leaves.most_common(args.top):
        print(f"  {count / total:6.1%}  {leaf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
