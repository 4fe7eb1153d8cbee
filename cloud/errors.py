"""The cloud service's exception tree.

Everything the cloud raises on purpose derives from :class:`CloudError`. Library errors
(httpx, SQLAlchemy, paho, sqlite3) are translated into this tree where they occur; the
API maps it onto HTTP status codes in one place (``cloud.api.errors``).

    CloudError
    ├── ConfigError            settings are invalid (which setting, why)
    ├── StoreError             the time-series store refused a write or a query
    │   └── StoreUnavailable   the store cannot be reached now (retry later; never ack)
    ├── RegistryError          the SQL registry cannot do what was asked
    │   ├── NotFound           no such object, or not visible to the caller (→ 404)
    │   ├── Conflict           the object exists already, or the change breaks a rule (→ 409)
    │   └── RegistryUnavailable  the SQL database cannot be reached now (→ 503)
    ├── BackupError            a backup cannot be made or restored (which file, why)
    ├── InvalidInput           a request names a bad value (what, where) (→ 422)
    └── AuthError              no valid credentials (→ 401)
        └── Forbidden          valid credentials without the right role (→ 403)
"""

from __future__ import annotations


class CloudError(Exception):
    """Base class of every error the cloud raises on purpose."""


class ConfigError(CloudError):
    """A setting is invalid; the message names the setting and what was expected."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        self.why = why
        super().__init__(f"{key}: {why}")


class StoreError(CloudError):
    """The time-series store refused a write or a query (a bad request, not an outage)."""


class StoreUnavailable(StoreError):
    """The time-series store cannot be reached or is overloaded: retry later.

    Ingest never acknowledges records whose write raised this."""


class RegistryError(CloudError):
    """The SQL registry cannot do what was asked."""


class NotFound(RegistryError):
    """No such object, or one the caller may not see (tenant isolation answers 404 too)."""


class Conflict(RegistryError):
    """The object exists already, or the change breaks a rule of the registry."""


class RegistryUnavailable(RegistryError):
    """The SQL database cannot be reached or refused the connection (an outage, not a
    bad request); the message says which database and why, without credentials."""


class BackupError(CloudError):
    """A backup cannot be made or restored: a missing, corrupted or truncated file (named),
    a schema newer than this version knows, a target that is not empty; the message says
    what state the target was left in."""


class InvalidInput(CloudError):
    """A request carries a bad value; the message names the value and why."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}")


class AuthError(CloudError):
    """No valid credentials."""


class Forbidden(AuthError):
    """Valid credentials, but the role may not do this."""
