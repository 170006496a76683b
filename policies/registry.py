"""The initial policy registry of SPEC section 4, created by a migration."""

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


def registry_create(policy_model) -> None:
    """Create the registry's policies that are missing (takes a historical model,
    which may predate some of an entry's fields: those are left to their
    migrations)."""
    fields = {f.name for f in policy_model._meta.get_fields()}
    for entry in REGISTRY:
        known = {key: value for key, value in entry.items() if key in fields}
        policy_model.objects.get_or_create(name=entry["name"], defaults=known)
