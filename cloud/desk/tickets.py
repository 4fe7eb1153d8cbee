"""The contract between the work-order outbox worker and the service-desk adapters.

One delivery carries one :class:`Ticket` (a change of one work order) to the desk that a
:class:`DeskConfig` describes; :func:`make_adapter` gives the :class:`DeskAdapter` for it.
``deliver`` answers an :class:`Outcome` and never raises for HTTP or network failures:

- ``ok``: the desk has the change; ``external_id``/``external_ref`` name its ticket
  (store them: later deliveries pass ``external_id`` back and skip the lookup);
- not ``ok`` and not ``permanent``: retry the same delivery later, no sooner than
  ``retry_after_s`` when the desk (or the adapter) said so;
- ``permanent``: the desk refused the request (a 4xx other than 408/409/425/429, or a
  configuration the desk does not accept); retrying the same request cannot succeed.

Exactly one ticket per order, also across retries and restarts: the order id is written
into the ticket (ServiceNow ``correlation_id``, Jira label ``ew-<order id>``, Zendesk
``external_id``) and an adapter that is not given ``external_id`` looks the ticket up by
it before it creates one. So a retry after a create whose answer was lost finds the ticket
instead of making a second one. ``delivery_id`` is stable across the retries of one
delivery: it is the webhook's ``webhook-id`` and the base of Zendesk's ``Idempotency-Key``.

Updates (``updated``, ``state_changed``, ``commented``) are at least once: a retried
update whose first answer was lost may add its note to the ticket twice.

Secrets (``DeskConfig.secret``, ``DeskConfig.token``) never appear in ``repr``, in an
``Outcome.detail`` or in logs. Adapters log each request and outcome at DEBUG only; the
caller logs outcomes (a desk that keeps refusing once at ERROR, the repeats at DEBUG).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol, get_args

import httpx

TicketEvent = Literal["created", "updated", "state_changed", "commented"]
DeskKind = Literal["webhook", "servicenow", "jira", "zendesk"]

TICKET_EVENTS: Final[tuple[str, ...]] = get_args(TicketEvent)
DESK_KINDS: Final[tuple[str, ...]] = get_args(DeskKind)
ORDER_STATES: Final = (
    "waiting_approval",
    "approved",
    "scheduled",
    "in_progress",
    "complete",
    "closed",
    "cancelled",
)
"""The work-order states a ticket carries out and a status update names back."""
ORDER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""What an order id may look like (a uuid does): it goes unescaped into ServiceNow encoded
queries, JQL and Jira labels."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What one delivery carries; built by the outbox worker from a work order."""

    order_id: str
    """Our work order's uuid: the idempotency anchor at the desk."""
    number: str
    """The human number, e.g. ``WO-000123``."""
    event: TicketEvent
    title: str
    description: str
    """Plain text, several lines."""
    priority: int
    """1 (urgent) .. 4 (low)."""
    state: str
    """Our work-order state (one of :data:`ORDER_STATES`)."""
    due_at: datetime | None
    """The SLA due time (UTC)."""
    comment: str | None
    """For ``commented``/``updated``/``state_changed``: the note to add."""
    payload: Mapping[str, Any]
    """The order's full JSON document; the webhook sends it unchanged as ``data``."""


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """One client's service desk.

    ``options`` by kind: jira ``service_desk_id``, ``request_type_id`` (required),
    ``search_path``, ``index_settle_s``; servicenow ``assignment_group``, ``caller_id``,
    ``close_code``; zendesk ``group_id``. Unknown options are a configuration error.
    """

    kind: DeskKind
    url: str
    """Base URL of the desk (webhook: the full endpoint URL)."""
    secret: str = field(repr=False)
    """``whsec_<base64>``: signs webhook deliveries and verifies the desk's inbound posts."""
    username: str = ""
    """ServiceNow user / Jira account email / Zendesk agent email."""
    token: str = field(default="", repr=False)
    """ServiceNow password / Jira API token / Zendesk API token."""
    options: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one delivery attempt (see the module docstring)."""

    ok: bool
    external_id: str | None = None
    """The desk's ticket id or key, once known."""
    external_ref: str | None = None
    """The human reference (INC0010001, SD-12, the Zendesk ticket id)."""
    status_code: int | None = None
    """The HTTP status of the last answer, if there was one."""
    retry_after_s: float | None = None
    """Retry no sooner than this (from ``Retry-After``, or the adapter's own floor)."""
    permanent: bool = False
    """Do not retry: the same request cannot succeed."""
    detail: str = ""
    """Short and free of secrets: what happened, for logs and the delivery record."""
    request_count: int = 0
    """HTTP requests this attempt made (lookups included)."""

    @property
    def retryable(self) -> bool:
        return not self.ok and not self.permanent


class DeskAdapter(Protocol):
    """Creates or updates the ticket of one work order at one desk."""

    kind: str

    def deliver(
        self, ticket: Ticket, *, delivery_id: str, attempt: int, external_id: str | None
    ) -> Outcome:
        """Carry ``ticket`` to the desk; never raises for HTTP or network failures."""
        ...

    def close(self) -> None:
        """Release the HTTP client if the adapter made it (a client passed in stays open)."""
        ...


def make_adapter(
    config: DeskConfig,
    client: httpx.Client | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> DeskAdapter:
    """The adapter for ``config.kind``; :class:`~cloud.errors.ConfigError` naming the key
    (``desk.url``, ``desk.options.service_desk_id``, ...) when the config is unusable.

    ``client`` lets several adapters share one connection pool; each request still uses
    ``config.timeout_s``. ``clock`` (unix seconds) stamps webhook signatures and turns an
    HTTP-date ``Retry-After`` into a delay.
    """
    from cloud.desk.adapters import build_adapter  # the adapters import this module

    return build_adapter(config, client, clock=clock)
