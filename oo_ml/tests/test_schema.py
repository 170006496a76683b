"""The OpenAPI schema groups the staff routes under tags that say what they are."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_staff_routes_have_tags_of_their_own_and_none_is_api(staff_api):
    schema = staff_api.get("/api/schema/", {"format": "json"}).json()

    tags = {
        (method.upper(), path): operation["tags"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert tags[("GET", "/api/admin/policies")] == ["admin: policies"]
    assert tags[("POST", "/api/admin/policies/rollback")] == ["admin: policies"]
    assert tags[("POST", "/api/simulations")] == ["simulations"]
    assert tags[("GET", "/api/simulations/{run_id}")] == ["simulations"]
    assert tags[("POST", "/score")] == ["score"]  # the others as they were
    assert all(tag != ["api"] for tag in tags.values())
    described = {tag["name"] for tag in schema["tags"] if tag.get("description")}
    assert {"admin: policies", "simulations"} <= described
