"""The policy registry: the initial three, created by a migration, and the
policies added since, each by a migration of its own."""

REGISTRY = [
    {
        "name": "linucb-v1",
        "algorithm": "linucb",
        "dimension": 5,
        "params": {"alpha": 1.0},
        "role": "retired",
        "enabled": False,
        "learns_live": False,
        "description": "LinUCB over the five task features.",
    },
    {
        "name": "egreedy-v1",
        "algorithm": "egreedy",
        "dimension": 7,
        "params": {"epsilon": 0.1},
        "role": "active",
        "enabled": False,
        "learns_live": True,
        "description": "ε-greedy over task features and day of week.",
    },
    {
        "name": "egreedy-v2",
        "algorithm": "egreedy",
        "dimension": 12,
        "params": {"epsilon": 0.1},
        "role": "shadow",
        "enabled": False,
        "learns_live": True,
        "description": "ε-greedy with the five user-profile features.",
    },
]


# Population-informed: a shared model over every user's rewards, refit in batch,
# and each user's own ridge estimate centred on it (docs/algorithms.md). It
# ships as a shadow, to be promoted through the gate.
HYBRID_V1 = {
    "name": "hybrid-v1",
    "algorithm": "hybrid",
    "dimension": 12,
    "params": {
        "epsilon": 0.01,
        "prior_weight": 300.0,
        "ridge": 0.02,
        "refit_every": 1,
    },
    "role": "shadow",
    "enabled": False,
    "learns_live": True,
    "description": "ε-greedy on each user's ridge estimate, centred on a shared "
    "model of what users with this profile and hour get from a task.",
}
ADDED = [HYBRID_V1]


def registry_create(policy_model, entries=None) -> None:
    """Create the registry's policies that are missing (takes a historical model,
    which may predate some of an entry's fields: those are left to their
    migrations)."""
    fields = {f.name for f in policy_model._meta.get_fields()}
    for entry in REGISTRY + ADDED if entries is None else entries:
        known = {key: value for key, value in entry.items() if key in fields}
        policy_model.objects.get_or_create(name=entry["name"], defaults=known)
