"""The OpenAPI schema's tags: the staff routes under /api/ grouped by what they
manage, instead of drf-spectacular's first path segment ("api")."""

from __future__ import annotations

# (path prefix, tag, what the tag's routes do), first match wins.
TAGS = (
    (
        "/api/admin/policies",
        "admin: policies",
        "Staff only: list the policies, switch a shadow's scoring and any policy's "
        "learning, promote a shadow behind the simulation gate, roll back.",
    ),
    (
        "/api/simulations",
        "simulations",
        "Staff only: start a simulation run on the workers, list runs, read one.",
    ),
)


def tag_staff_routes(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: retag the staff routes, describe
    their tags; nothing else in the schema changes."""
    for path, operations in result.get("paths", {}).items():
        for prefix, tag, _ in TAGS:
            if path.startswith(prefix):
                for operation in operations.values():
                    operation["tags"] = [tag]
                break
    result["tags"] = [
        *result.get("tags", []),
        *({"name": tag, "description": text} for _, tag, text in TAGS),
    ]
    return result
