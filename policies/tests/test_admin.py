"""The admin shows policies, state and logs, and lets nobody edit learned state."""

from __future__ import annotations

import pytest

from policies.models import BanditState, Decision, Reward


@pytest.fixture
def history(api):
    decision = api.post(
        "/score",
        {"user_id": "u1", "candidates": [{"id": "a"}, {"id": "b"}]},
        format="json",
    ).json()
    api.post(
        "/reward",
        {
            "user_id": "u1",
            "tip_id": "a",
            "reward": 1.0,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["policy", "banditstate", "decision", "reward"])
def test_every_changelist_opens(client, staff_user, history, model):
    client.force_login(staff_user)
    assert client.get(f"/admin/policies/{model}/").status_code == 200


@pytest.mark.django_db
def test_a_state_page_shows_theta_with_its_labels_and_cannot_be_edited(
    client, staff_user, history
):
    client.force_login(staff_user)
    state = BanditState.objects.get()
    page = client.get(f"/admin/policies/banditstate/{state.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Weights θ = A⁻¹b" in html and "hour_sin" in html and "dow_cos" in html
    assert 'name="_save"' not in html  # read-only: no save button
    response = client.post(
        f"/admin/policies/banditstate/{state.pk}/change/", {"reward_count": 99}
    )
    assert response.status_code == 403
    assert BanditState.objects.get().reward_count == 1


@pytest.mark.django_db
def test_logs_cannot_be_deleted_from_the_admin(client, staff_user, history):
    client.force_login(staff_user)
    for model, obj in (
        ("decision", Decision.objects.first()),
        ("reward", Reward.objects.first()),
    ):
        response = client.post(
            f"/admin/policies/{model}/{obj.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 403
    assert Decision.objects.count() == 1 and Reward.objects.count() == 1
