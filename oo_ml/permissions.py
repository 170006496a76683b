"""Who may do what: one rule for each admin action, shared by the admin and the API.

An action needs a staff account holding every model permission that the
admin's button for the same action asks, so the API is no back door around
the admin: a staff user with no permissions is refused in both.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

# The admin actions and the permissions each asks.
POLICY_VIEW = ("policies.view_policy",)
POLICY_CHANGE = ("policies.change_policy",)  # toggle, promote, rollback
USER_RESET = ("policies.delete_banditstate",)
RUN_VIEW = ("simulations.view_run",)
RUN_START = ("simulations.view_run", "simulations.add_run")


def staff_may(user, action: tuple[str, ...]) -> bool:
    """True if ``user`` is an active staff account holding ``action``'s
    permissions (a superuser holds every permission, but must be staff too)."""
    return bool(
        user is not None and user.is_active and user.is_staff and user.has_perms(action)
    )


class StaffMay(BasePermission):
    """The view's ``actions``, by method: ``{"GET": RUN_VIEW, "POST": RUN_START}``."""

    def has_permission(self, request, view) -> bool:
        action = view.actions_by_method.get(request.method)
        if action is None and request.method in ("HEAD", "OPTIONS"):
            action = view.actions_by_method.get("GET")
        return action is not None and staff_may(request.user, action)
