"""Who is calling: the identity every registry service scopes its queries by."""

from __future__ import annotations

from dataclasses import dataclass

from cloud.registry.models import Role, User

NO_CLIENT = "-none-"
"""A client id no client has (ids are UUIDs)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: a user (by token or API key) or the operator's command line (``system``).

    ``client_id`` is set exactly for facility managers: the one client they may see."""

    user_id: str | None
    role: Role
    client_id: str | None = None

    @classmethod
    def system(cls) -> Principal:
        """The operator at the command line (``edgewatch-cloud admin ...``): an admin."""
        return cls(user_id=None, role=Role.ADMIN, client_id=None)

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(user_id=user.id, role=user.role, client_id=user.client_id)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def tenant(self) -> str | None:
        """The client this caller is confined to, or None for all clients.

        A facility manager without a client (which the services never create) is
        confined to a client id that matches nothing rather than to none."""
        if self.role is Role.FACILITY_MANAGER:
            return self.client_id or NO_CLIENT
        return None
