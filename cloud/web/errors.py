"""The dashboard's errors, in the cloud's tree (:mod:`cloud.errors`).

    AuthError
    ├── LoginRequired   no session cookie, or one that no longer names an active user:
    │                   the pages send the browser to the login form (303), saying why
    └── Forbidden
        └── CsrfRefused a form without the session's CSRF token (403 page)

Every other :class:`~cloud.errors.CloudError` a page meets (``NotFound`` for another
client's object, ``Conflict`` for a refused move, ...) becomes an HTML page with the status
the API would answer (:func:`cloud.api.errors.status_of`).
"""

from __future__ import annotations

from typing import Final, Literal

from cloud.errors import AuthError, Forbidden

LoginReason = Literal["none", "expired", "disabled", "signed_out"]

LOGIN_MESSAGES: Final[dict[str, str]] = {
    "expired": "Your session has ended. Please sign in again.",
    "disabled": "This account has been deactivated. Ask your administrator to restore it.",
    "signed_out": "You have signed out.",
}
"""What the login page says after a redirect, by the reason in its ``why`` parameter."""


class LoginRequired(AuthError):
    """The request carries no valid session; ``reason`` says why (for the login page)."""

    def __init__(self, reason: LoginReason = "none") -> None:
        self.reason = reason
        super().__init__(f"sign-in required ({reason})")


class CsrfRefused(Forbidden):
    """A POST whose CSRF token is missing or does not belong to the session."""

    def __init__(self) -> None:
        super().__init__(
            "this form has expired or did not come from this dashboard: go back, reload "
            "the page and try again"
        )
