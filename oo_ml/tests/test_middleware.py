"""The token path past the admin's middleware (oo_ml.middleware.TokenApiMiddleware)."""

import json

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from oo_ml.middleware import TokenApiMiddleware

pytestmark = pytest.mark.django_db

BODY = {
    "user_id": "u1",
    "candidates": [{"id": "t1", "content": "a", "source": "todo"}],
}


def _chain_called(request) -> HttpResponse:
    request.chain_called = True
    return HttpResponse("the rest of the chain")


def _through(request):
    request.chain_called = False
    return TokenApiMiddleware(_chain_called)(request)


def test_a_token_call_to_an_api_view_skips_the_rest_of_the_chain(service_token):
    request = RequestFactory().post(
        "/score",
        json.dumps(BODY),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {service_token}",
    )
    response = _through(request)
    assert request.chain_called is False
    assert response.status_code == 200
    assert json.loads(response.content)["tip_id"] == "t1"
    assert request.resolver_match.url_name == "score"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/score", {}),  # no token: a browser session may be the credential
        ("/score", {"HTTP_AUTHORIZATION": ""}),
        ("/admin/", {"HTTP_AUTHORIZATION": "Token x"}),  # not a DRF view
        ("/nowhere", {"HTTP_AUTHORIZATION": "Token x"}),  # resolves to nothing
    ],
)
def test_anything_else_takes_the_whole_chain(path, headers):
    request = RequestFactory().post(
        path, "{}", content_type="application/json", **headers
    )
    response = _through(request)
    assert request.chain_called is True
    assert response.content == b"the rest of the chain"


def test_a_wrong_token_is_still_a_clear_401(api):
    api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = api.post("/score", BODY, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == "authentication_failed"


def test_a_staff_session_without_a_token_still_reaches_the_api(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/api/admin/policies")
    assert response.status_code == 200
    assert "egreedy-v1" in json.dumps(response.json())


class _Elsewhere(APIView):
    """The view this module's URLconf puts at /score."""

    permission_classes = [AllowAny]

    def post(self, request):
        return HttpResponse("elsewhere")


urlpatterns = [path("score", _Elsewhere.as_view())]


def test_a_changed_urlconf_is_followed_on_the_token_path(service_token):
    """The token path remembers what a path resolves to, per URLconf: a new one
    (override_settings here, a reload in a process) is resolved afresh."""

    def post():
        request = RequestFactory().post(
            "/score",
            json.dumps(BODY),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {service_token}",
        )
        return _through(request)

    assert json.loads(post().content)["tip_id"] == "t1"
    with override_settings(ROOT_URLCONF=__name__):
        assert post().content == b"elsewhere"
    assert json.loads(post().content)["tip_id"] == "t1"
