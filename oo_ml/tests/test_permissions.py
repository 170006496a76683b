"""One rule for each admin action, in the admin and the API alike: a staff
account holding the model permissions the admin's button asks. Every staff
route is tried with no token, a service token, a staff account without
permissions (token and session), a non-staff account with them, and the staff
account holding exactly them."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from oo_ml.auth import token_create
from oo_ml.permissions import (
    POLICY_CHANGE,
    POLICY_VIEW,
    RUN_START,
    RUN_VIEW,
    USER_RESET,
)
from policies.models import Policy, PolicyChange
from simulations.models import Run

pytestmark = pytest.mark.django_db

RUN_BODY = {
    "policies": ["egreedy-v1", "egreedy-v2"],
    "judge": "rule",
    "n_users": 2,
    "n_rounds": 2,
    "seed": 1,
}
# (method, route, body, the action's permissions)
ROUTES = [
    ("get", "/api/admin/policies", None, POLICY_VIEW),
    ("post", "/api/admin/policies/egreedy-v2/toggle", None, POLICY_CHANGE),
    ("post", "/api/admin/policies/egreedy-v2/promote", None, POLICY_CHANGE),
    ("post", "/api/admin/policies/rollback", None, POLICY_CHANGE),
    ("post", "/reset/u1", None, USER_RESET),
    ("get", "/api/simulations", None, RUN_VIEW),
    ("post", "/api/simulations", RUN_BODY, RUN_START),
    ("get", f"/api/simulations/{uuid.uuid4()}", None, RUN_VIEW),
]
IDS = [f"{method} {route}" for method, route, _, _ in ROUTES]


def account(username: str, *, staff: bool, action: tuple[str, ...] = ()):
    user = get_user_model().objects.create_user(
        username=username, password=None, is_staff=staff
    )
    for label in action:
        app_label, codename = label.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return get_user_model().objects.get(pk=user.pk)  # no stale permission cache


def with_token(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=user)}")
    return client


def with_session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def call(client: APIClient, method: str, route: str, body):
    if body is None:
        return getattr(client, method)(route)
    return getattr(client, method)(route, body, format="json")


def nothing_changed() -> bool:
    return (
        not Run.objects.exists()
        and not PolicyChange.objects.exists()
        and not Policy.objects.filter(name="egreedy-v2", enabled=True).exists()
    )


@pytest.mark.parametrize(("method", "route", "body", "action"), ROUTES, ids=IDS)
def test_who_is_refused(anon, api, method, route, body, action):
    assert call(anon, method, route, body).status_code == 401
    assert call(api, method, route, body).status_code == 403  # a service token
    bare = account("bare-staff", staff=True)
    assert call(with_token(bare), method, route, body).status_code == 403
    assert call(with_session(bare), method, route, body).status_code == 403
    # The permissions without staff are not enough either.
    outsider = account("outsider", staff=False, action=action)
    assert call(with_token(outsider), method, route, body).status_code == 403
    # Nor the permissions of every other action.
    others = {p for _, _, _, a in ROUTES if a != action for p in a} - set(action)
    almost = account("almost", staff=True, action=tuple(sorted(others)))
    assert call(with_token(almost), method, route, body).status_code == 403
    assert nothing_changed()


@pytest.mark.parametrize(("method", "route", "body", "action"), ROUTES, ids=IDS)
def test_staff_holding_the_actions_permissions_get_through(method, route, body, action):
    allowed = account("allowed", staff=True, action=action)
    response = call(with_token(allowed), method, route, body)
    # Past the permission check: the action's own answer (a 404 for an unknown
    # run, a 409 for a refused promotion, ...), never a 401 or 403.
    assert response.status_code not in (401, 403), response.content


@pytest.mark.parametrize(
    ("page", "action"),
    [("/admin/policies/", POLICY_VIEW), ("/admin/simulations/", RUN_VIEW)],
)
def test_the_admin_pages_ask_the_same(client, page, action):
    client.force_login(account("bare-staff", staff=True))
    assert client.get(page).status_code == 403
    client.force_login(account("allowed", staff=True, action=action))
    assert client.get(page).status_code == 200
