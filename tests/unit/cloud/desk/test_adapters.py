"""The desk adapters against local fakes of the vendors' APIs (tests/support/desk_vendors.py):
the exact requests of a create and an update, how each kind of answer is classified, and
that an order never gets two tickets: not when a create lands but its answer is lost, not
after a restart, not under random faults."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from support.desk_vendors import (
    JIRA_EMAIL,
    JIRA_TOKEN,
    SERVICENOW_PASSWORD,
    SERVICENOW_USER,
    ZENDESK_EMAIL,
    ZENDESK_TOKEN,
    FakeJira,
    FakeServiceNow,
    FakeVendor,
    FakeWebhookReceiver,
    FakeZendesk,
    Flaky,
    applied_then_error,
    applied_then_timeout,
    garbled,
    rate_limited,
    server_error,
    timeout,
)

from cloud.desk.adapters import parse_retry_after, refusal
from cloud.desk.signing import new_secret, verify
from cloud.desk.tickets import DeskAdapter, DeskConfig, Outcome, Ticket, make_adapter
from cloud.errors import ConfigError

CLIENT_TIMEOUT_S = 0.3
HANG_S = 0.6
SECRET = new_secret()
ORDER = "0b8f8c1e-1111-4222-8333-444455556666"
DUE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW = 1_780_000_000.0
DESCRIPTION = "Compressor current rising for 3 days.\nRisk of failure within 7 days: 82 %."
FOOTER = f"\n\nEdgeWatch work order WO-000123 ({ORDER}), priority P2, due 2026-05-01T12:00:00Z."


def make_ticket(**changes: Any) -> Ticket:
    ticket = Ticket(
        order_id=ORDER,
        number="WO-000123",
        event="created",
        title="Cold room 2: compressor likely to fail",
        description=DESCRIPTION,
        priority=2,
        state="waiting_approval",
        due_at=DUE,
        comment=None,
        payload={"id": ORDER, "number": "WO-000123", "state": "waiting_approval"},
    )
    return dataclasses.replace(ticket, **changes)


def order_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---- one harness per vendor -----------------------------------------------------------------


@dataclass(frozen=True)
class Vendor:
    kind: str
    fake: Callable[..., FakeVendor]
    config: Callable[[str], DeskConfig]
    create_path: str
    tickets_for: Callable[[Any, str], list[dict[str, Any]]]
    notes: Callable[[Any], list[str]]
    """The notes added to the first ticket after its creation."""


def servicenow_config(url: str, **changes: Any) -> DeskConfig:
    config = DeskConfig(
        "servicenow", url, SECRET, SERVICENOW_USER, SERVICENOW_PASSWORD, timeout_s=CLIENT_TIMEOUT_S
    )
    return dataclasses.replace(config, **changes)


def jira_config(url: str, **options: str) -> DeskConfig:
    return DeskConfig(
        "jira",
        url,
        SECRET,
        JIRA_EMAIL,
        JIRA_TOKEN,
        {"service_desk_id": "1", "request_type_id": "10", "index_settle_s": "0", **options},
        timeout_s=CLIENT_TIMEOUT_S,
    )


def zendesk_config(url: str, **changes: Any) -> DeskConfig:
    config = DeskConfig(
        "zendesk", url, SECRET, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout_s=CLIENT_TIMEOUT_S
    )
    return dataclasses.replace(config, **changes)


VENDORS = [
    Vendor(
        "servicenow",
        FakeServiceNow,
        servicenow_config,
        "/api/now/table/incident",
        FakeServiceNow.incidents_for,
        lambda fake: fake.incidents[0]["journal"],
    ),
    Vendor(
        "jira",
        FakeJira,
        jira_config,
        "/rest/servicedeskapi/request",
        FakeJira.issues_for,
        lambda fake: fake.issues[0]["comments"],
    ),
    Vendor(
        "zendesk",
        FakeZendesk,
        zendesk_config,
        "/api/v2/tickets.json",
        FakeZendesk.tickets_for,
        lambda fake: [c["body"] for c in fake.tickets[0]["comments"][1:]],
    ),
]


@pytest.fixture
def adapters() -> Iterator[Callable[[DeskConfig], DeskAdapter]]:
    """Makes adapters (with a fixed clock) and closes them after the test."""
    made: list[DeskAdapter] = []

    def make(config: DeskConfig) -> DeskAdapter:
        made.append(make_adapter(config, clock=lambda: NOW))
        return made[-1]

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture(params=VENDORS, ids=[v.kind for v in VENDORS])
def vendor(request: pytest.FixtureRequest) -> Vendor:
    chosen: Vendor = request.param
    return chosen


def deliver(
    adapter: DeskAdapter,
    ticket: Ticket,
    *,
    delivery_id: str = "dlv-1",
    attempt: int = 1,
    external_id: str | None = None,
) -> Outcome:
    return adapter.deliver(
        ticket, delivery_id=delivery_id, attempt=attempt, external_id=external_id
    )


# ---- exactly one ticket per order ------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [applied_then_timeout(hang_s=HANG_S, method="POST"), applied_then_error(502, method="POST")],
    ids=["timeout", "502"],
)
def test_a_create_that_landed_is_found_by_the_retry(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter], fault: Any
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.inject(fault)
        first = deliver(adapter, make_ticket())
        assert first.retryable and first.external_id is None
        assert len(vendor.tickets_for(fake, ORDER)) == 1  # it landed nevertheless
        fake.clear_requests()

        second = deliver(adapter, make_ticket(), attempt=2)
        assert second.ok and second.external_id is not None
        assert [r.method for r in fake.requests] == ["GET"]  # the lookup, no second create
        assert second.request_count == 1
        assert len(vendor.tickets_for(fake, ORDER)) == 1


def test_a_restarted_adapter_still_finds_the_ticket(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        fake.inject(applied_then_timeout(hang_s=HANG_S, method="POST"))
        assert deliver(adapters(vendor.config(fake.url)), make_ticket()).retryable

        restarted = adapters(vendor.config(fake.url))  # a new process: nothing remembered
        again = deliver(restarted, make_ticket(), attempt=2)
        assert again.ok
        once_more = deliver(adapters(vendor.config(fake.url)), make_ticket(), attempt=3)
        assert once_more.external_id == again.external_id
        assert len(vendor.tickets_for(fake, ORDER)) == 1
        assert len(fake.requests_for("POST", vendor.create_path)) == 1


def test_a_full_life_updates_the_one_ticket(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        created = deliver(adapter, make_ticket())
        assert created.ok and created.status_code == 201 and created.request_count == 2
        changes: list[dict[str, Any]] = [
            {"event": "updated", "priority": 1, "comment": "Escalated by the risk model"},
            {"event": "state_changed", "state": "in_progress", "comment": None},
            {"event": "commented", "comment": "Technician on site"},
            {"event": "state_changed", "state": "complete", "comment": "Compressor replaced"},
        ]
        for n, change in enumerate(changes, start=2):
            outcome = deliver(
                adapter,
                make_ticket(**change),
                delivery_id=f"dlv-{n}",
                external_id=created.external_id,
            )
            assert outcome.ok, outcome.detail
            assert outcome.request_count == 1
            assert outcome.external_id == created.external_id
        assert len(vendor.tickets_for(fake, ORDER)) == 1
        assert len(fake.requests_for("POST", vendor.create_path)) == 1
        notes = vendor.notes(fake)
    assert len(notes) == 4
    assert notes[0].startswith("EdgeWatch work order WO-000123 was updated: priority P1")
    assert notes[1] == "EdgeWatch work order WO-000123 is now in_progress."
    assert notes[2] == "Technician on site"
    assert notes[3].endswith("is now complete.\nCompressor replaced")


def test_an_update_without_a_known_ticket_finds_or_creates_it(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        first = deliver(adapter, make_ticket(event="commented", comment="First word"))
        assert first.ok and first.request_count == 3  # lookup, create, comment
        second = deliver(
            adapter, make_ticket(event="commented", comment="Second"), delivery_id="d2"
        )
        assert second.ok and second.request_count == 2  # lookup, comment
        assert second.external_id == first.external_id
        assert len(vendor.tickets_for(fake, ORDER)) == 1


def test_many_orders_under_random_faults_get_one_ticket_each(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    orders = [order_id(n) for n in range(120)]
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.flaky(
            Flaky(
                seed=11,
                rate_limit=0.05,
                error=0.1,
                applied_error=0.1,
                timeout=0.01,
                applied_timeout=0.01,
                hang_s=HANG_S,
            )
        )

        def until_ok(oid: str) -> tuple[Outcome, int]:
            ticket = make_ticket(order_id=oid)
            for attempt in range(1, 30):
                outcome = deliver(adapter, ticket, delivery_id=f"d-{oid}", attempt=attempt)
                if outcome.ok or outcome.permanent:
                    return outcome, attempt
            raise AssertionError(f"{oid} never delivered")

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(until_ok, orders))
        fake.flaky(None)

    assert all(outcome.ok for outcome, _ in results), [o.detail for o, _ in results if not o.ok]
    assert sum(attempts for _, attempts in results) > len(orders)  # faults did happen
    assert fake.faults_applied > 20
    per_order = {oid: len(vendor.tickets_for(fake, oid)) for oid in orders}
    assert set(per_order.values()) == {1}
    assert len({outcome.external_id for outcome, _ in results}) == len(orders)


# ---- how answers are classified ---------------------------------------------------------------


def test_429_is_retryable_after_the_vendors_delay(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.inject(rate_limited("7"))
        outcome = deliver(adapter, make_ticket())
        assert (outcome.ok, outcome.permanent, outcome.status_code) == (False, False, 429)
        assert outcome.retry_after_s == 7
        assert "retry after 7 s" in outcome.detail
        fake.inject(rate_limited(format_datetime(datetime.fromtimestamp(NOW + 90, UTC), True)))
        assert deliver(adapter, make_ticket()).retry_after_s == 90
        assert fake.requests_for("POST") == []  # the lookups were refused: nothing created


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter], status: int
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.inject(server_error(status, method="POST"))
        outcome = deliver(adapter, make_ticket())
        assert outcome.retryable and outcome.status_code == status
        assert outcome.retry_after_s in (None, 0.0)
        assert vendor.tickets_for(fake, ORDER) == []
        assert deliver(adapter, make_ticket(), attempt=2).ok
        assert len(vendor.tickets_for(fake, ORDER)) == 1


def test_timeouts_and_refused_connections_are_retryable(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.inject(timeout(hang_s=HANG_S))
        started = time.monotonic()
        outcome = deliver(adapter, make_ticket())
        assert time.monotonic() - started < HANG_S  # the client's timeout, not the server's
        assert outcome.retryable and outcome.status_code is None
        assert "no answer within 0.3 s" in outcome.detail
        url = fake.url
    gone = deliver(adapters(vendor.config(url)), make_ticket())  # the server is stopped
    assert gone.retryable and gone.status_code is None and "ConnectError" in gone.detail


def test_wrong_credentials_are_permanent_and_kept_out_of_the_detail(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        wrong = "wrong-secret-token"
        config = dataclasses.replace(vendor.config(fake.url), token=wrong)
        outcome = deliver(adapters(config), make_ticket())
        assert (outcome.ok, outcome.permanent, outcome.status_code) == (False, True, 401)
        assert wrong not in outcome.detail
        assert wrong not in repr(config)
        assert SECRET not in repr(config)


def test_an_update_of_a_ticket_the_desk_no_longer_has_is_permanent(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    missing = {"servicenow": "0" * 32, "jira": "SD-999", "zendesk": "999"}[vendor.kind]
    with vendor.fake() as fake:
        outcome = deliver(
            adapters(vendor.config(fake.url)),
            make_ticket(event="commented", comment="x"),
            external_id=missing,
        )
        assert outcome.permanent and outcome.status_code == 404
        assert outcome.external_id == missing


def test_a_failed_update_still_reports_the_ticket_it_found(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        created = deliver(adapter, make_ticket())
        fake.inject(server_error(503, method="PUT"))
        fake.inject(server_error(503, method="PATCH"))
        fake.inject(server_error(503, path_contains="/comment"))
        outcome = deliver(adapter, make_ticket(event="commented", comment="x"), delivery_id="d2")
        assert outcome.retryable and outcome.status_code == 503
        assert outcome.external_id == created.external_id  # the worker can skip the lookup


def test_a_garbled_2xx_is_retryable(
    vendor: Vendor, adapters: Callable[[DeskConfig], DeskAdapter]
) -> None:
    with vendor.fake() as fake:
        adapter = adapters(vendor.config(fake.url))
        fake.inject(garbled(method="GET"))
        lookup = deliver(adapter, make_ticket())
        assert lookup.retryable and lookup.status_code == 200
        assert "not JSON" in lookup.detail and "hibernating" in lookup.detail
        assert fake.requests_for("POST") == []  # no create on an unreadable lookup
        fake.inject(garbled(b"[]", method="POST"))
        create = deliver(adapter, make_ticket(), attempt=2)
        assert create.retryable and "not a JSON object" in create.detail


def test_a_ticket_that_cannot_be_right_is_refused_without_a_request(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeServiceNow() as fake:
        adapter = adapters(servicenow_config(fake.url))
        bad: list[tuple[dict[str, Any], str]] = [
            ({"order_id": "x^ORDERBYnumber"}, "order_id"),
            ({"order_id": ORDER + "\n"}, "order_id"),
            ({"priority": 5}, "priority 5"),
            ({"state": "done"}, "state 'done'"),
            ({"title": " "}, "title"),
        ]
        for change, why in bad:
            outcome = deliver(adapter, make_ticket(**change))
            assert outcome.permanent and why in outcome.detail
        assert fake.requests == []


# ---- ServiceNow: the exact requests -----------------------------------------------------------


def test_servicenow_create_request(adapters: Callable[[DeskConfig], DeskAdapter]) -> None:
    with FakeServiceNow() as fake:
        config = servicenow_config(
            fake.url, options={"assignment_group": "Facilities", "caller_id": "edgewatch.bot"}
        )
        outcome = deliver(adapters(config), make_ticket())
        lookup, create = fake.requests
    incident = fake.incidents[0]
    assert outcome == Outcome(
        ok=True,
        external_id=incident["sys_id"],
        external_ref="INC0010001",
        status_code=201,
        detail="created: ticket INC0010001 created",
        request_count=2,
    )
    assert (lookup.method, lookup.path) == ("GET", "/api/now/table/incident")
    assert dict(lookup.query) == {
        "sysparm_query": [f"correlation_id={ORDER}^ORDERBYsys_created_on"],
        "sysparm_limit": ["1"],
        "sysparm_fields": ["sys_id,number"],
    }
    for request in (lookup, create):
        assert request.headers["authorization"] == basic(SERVICENOW_USER, SERVICENOW_PASSWORD)
        assert request.headers["accept"] == "application/json"
    assert (create.method, create.path) == ("POST", "/api/now/table/incident")
    assert dict(create.query) == {"sysparm_fields": ["sys_id,number"]}
    assert create.headers["content-type"] == "application/json"
    assert create.json == {
        "short_description": "Cold room 2: compressor likely to fail",
        "description": DESCRIPTION + FOOTER,
        "impact": "1",
        "urgency": "2",
        "correlation_id": ORDER,
        "correlation_display": "EdgeWatch WO-000123",
        "due_date": "2026-05-01 12:00:00",
        "assignment_group": "Facilities",
        "caller_id": "edgewatch.bot",
    }


@pytest.mark.parametrize(
    ("state", "code", "closing"),
    [
        ("waiting_approval", "1", False),
        ("approved", "2", False),
        ("scheduled", "2", False),
        ("in_progress", "2", False),
        ("complete", "6", True),
        ("closed", "7", True),
        ("cancelled", "8", False),
    ],
)
def test_servicenow_state_change_request(
    adapters: Callable[[DeskConfig], DeskAdapter], state: str, code: str, closing: bool
) -> None:
    with FakeServiceNow() as fake:
        adapter = adapters(
            servicenow_config(fake.url, options={"close_code": "Solved (Permanently)"})
        )
        sys_id = deliver(adapter, make_ticket()).external_id
        assert sys_id is not None
        fake.clear_requests()
        outcome = deliver(
            adapter,
            make_ticket(
                event="state_changed", state=state, priority=4, comment="Done by Kälte GmbH"
            ),
            external_id=sys_id,
        )
        (patch,) = fake.requests
    note = f"EdgeWatch work order WO-000123 is now {state}.\nDone by Kälte GmbH"
    expected = {"work_notes": note, "impact": "3", "urgency": "2", "state": code}
    if closing:
        expected |= {"close_code": "Solved (Permanently)", "close_notes": note}
    assert (patch.method, patch.path) == ("PATCH", f"/api/now/table/incident/{sys_id}")
    assert dict(patch.query) == {"sysparm_fields": ["sys_id,number"]}
    assert patch.json == expected
    assert outcome.ok and outcome.external_ref == "INC0010001"  # from the PATCH answer
    incident = fake.incidents[0]
    assert incident["state"] == code and incident["journal"] == [note]


def test_servicenow_comment_is_a_work_note_only(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeServiceNow() as fake:
        adapter = adapters(servicenow_config(fake.url))
        sys_id = deliver(adapter, make_ticket()).external_id
        deliver(
            adapter, make_ticket(event="commented", comment="  Parts ordered  "), external_id=sys_id
        )
    assert fake.requests[-1].json == {"work_notes": "Parts ordered"}


def test_servicenow_data_policy_refusal_is_permanent(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeServiceNow() as fake:
        adapter = adapters(servicenow_config(fake.url))
        sys_id = deliver(adapter, make_ticket()).external_id
        # A state the adapter never sends alone, to show the fake's data policy and the 403.
        response = httpx.patch(
            f"{fake.url}/api/now/table/incident/{sys_id}",
            json={"state": "6"},
            auth=(SERVICENOW_USER, SERVICENOW_PASSWORD),
        )
        assert response.status_code == 403
        outcome = refusal(403, response.headers, response.text, "update", NOW)
        assert outcome.permanent and "mandatory" in outcome.detail


# ---- Jira: the exact requests ----------------------------------------------------------------


def test_jira_create_request(adapters: Callable[[DeskConfig], DeskAdapter]) -> None:
    with FakeJira() as fake:
        outcome = deliver(adapters(jira_config(fake.url)), make_ticket())
        search, create = fake.requests
    assert outcome.ok and (outcome.external_id, outcome.external_ref) == ("SD-1", "SD-1")
    assert (search.method, search.path) == ("GET", "/rest/api/2/search/jql")
    assert dict(search.query) == {
        "jql": [f'labels = "ew-{ORDER}" ORDER BY created ASC'],
        "maxResults": ["1"],
        "fields": ["summary"],
    }
    assert (create.method, create.path) == ("POST", "/rest/servicedeskapi/request")
    assert create.json == {
        "serviceDeskId": "1",
        "requestTypeId": "10",
        "requestFieldValues": {
            "summary": "Cold room 2: compressor likely to fail",
            "description": DESCRIPTION + FOOTER,
            "labels": [f"ew-{ORDER}"],
        },
    }
    for request in (search, create):
        assert request.headers["authorization"] == basic(JIRA_EMAIL, JIRA_TOKEN)


def test_jira_comment_request(adapters: Callable[[DeskConfig], DeskAdapter]) -> None:
    with FakeJira() as fake:
        adapter = adapters(jira_config(fake.url))
        deliver(adapter, make_ticket())
        outcome = deliver(
            adapter,
            make_ticket(event="updated", priority=1, due_at=None, comment="Risk now 95 %"),
            external_id="SD-1",
        )
        comment = fake.requests[-1]
    assert outcome.ok and outcome.status_code == 201
    assert (comment.method, comment.path) == ("POST", "/rest/api/2/issue/SD-1/comment")
    assert comment.json == {
        "body": "EdgeWatch work order WO-000123 was updated: priority P1, "
        "state waiting_approval.\nRisk now 95 %"
    }
    assert fake.issues[0]["comments"] == [comment.json["body"]]


def test_jira_data_center_search_path(adapters: Callable[[DeskConfig], DeskAdapter]) -> None:
    with FakeJira(legacy_search=True) as fake:
        assert deliver(
            adapters(jira_config(fake.url, search_path="/rest/api/2/search")), make_ticket()
        ).ok
        assert fake.requests[0].path == "/rest/api/2/search"
    with FakeJira() as cloud:  # Jira Cloud removed the legacy search: 410, a configuration error
        outcome = deliver(
            adapters(jira_config(cloud.url, search_path="/rest/api/2/search")), make_ticket()
        )
        assert outcome.permanent and outcome.status_code == 410 and "removed" in outcome.detail


def test_jira_request_type_without_labels_is_permanent(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeJira(request_type_fields=("summary", "description")) as fake:
        outcome = deliver(adapters(jira_config(fake.url)), make_ticket())
    assert outcome.permanent and outcome.status_code == 400
    assert "'labels' is not valid" in outcome.detail


def test_jira_waits_for_its_search_index_after_an_uncertain_create(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeJira(search_lag_s=0.3) as fake:
        adapter = adapters(jira_config(fake.url, index_settle_s="0.4"))
        fake.inject(applied_then_error(502, method="POST"))
        first = deliver(adapter, make_ticket())
        assert first.retryable and first.retry_after_s == 0.4
        assert "index settles" in first.detail
        fake.inject(rate_limited("2", method="POST"))  # refused, not uncertain: the vendor's delay
        other = adapters(jira_config(fake.url))
        assert deliver(other, make_ticket(order_id=order_id(1))).retry_after_s == 2

        time.sleep(first.retry_after_s)
        second = deliver(adapter, make_ticket(), attempt=2)
        assert second.ok and second.request_count == 1
        assert len(fake.issues_for(ORDER)) == 1


# ---- Zendesk: the exact requests ---------------------------------------------------------------


def test_zendesk_create_request(adapters: Callable[[DeskConfig], DeskAdapter]) -> None:
    with FakeZendesk() as fake:
        outcome = deliver(
            adapters(zendesk_config(fake.url, options={"group_id": "42"})), make_ticket()
        )
        lookup, create = fake.requests
    assert outcome.ok and (outcome.external_id, outcome.external_ref) == ("1", "1")
    assert (lookup.method, lookup.path, dict(lookup.query)) == (
        "GET",
        "/api/v2/tickets.json",
        {"external_id": [ORDER]},
    )
    assert (create.method, create.path, dict(create.query)) == ("POST", "/api/v2/tickets.json", {})
    assert create.json == {
        "ticket": {
            "subject": "Cold room 2: compressor likely to fail",
            "comment": {"body": DESCRIPTION + FOOTER},
            "priority": "high",
            "type": "task",
            "external_id": ORDER,
            "tags": ["edgewatch"],
            "due_at": "2026-05-01T12:00:00Z",
            "group_id": 42,
        }
    }
    digest = hashlib.sha256(create.body).hexdigest()[:16]
    assert create.headers["idempotency-key"] == f"dlv-1.{digest}"
    for request in (lookup, create):
        assert request.headers["authorization"] == basic(f"{ZENDESK_EMAIL}/token", ZENDESK_TOKEN)


@pytest.mark.parametrize(
    ("event", "state", "extra"),
    [
        ("commented", "in_progress", {}),
        ("state_changed", "waiting_approval", {"priority": "urgent"}),
        ("state_changed", "scheduled", {"priority": "urgent", "status": "open"}),
        ("state_changed", "cancelled", {"priority": "urgent", "status": "solved"}),
        ("updated", "complete", {"priority": "urgent", "status": "solved"}),
    ],
)
def test_zendesk_update_request(
    adapters: Callable[[DeskConfig], DeskAdapter], event: str, state: str, extra: dict[str, str]
) -> None:
    with FakeZendesk() as fake:
        adapter = adapters(zendesk_config(fake.url))
        deliver(adapter, make_ticket())
        ticket = make_ticket(event=event, state=state, priority=1, due_at=None, comment="Note")
        outcome = deliver(adapter, ticket, external_id="1")
        update = fake.requests[-1]
    assert outcome.ok and outcome.status_code == 200
    assert (update.method, update.path) == ("PUT", "/api/v2/tickets/1.json")
    assert "idempotency-key" not in update.headers
    assert update.json["ticket"].pop("comment")["public"] is False
    assert update.json == {"ticket": extra}
    stored = fake.tickets[0]
    assert stored["status"] == extra.get("status", "new")


def test_zendesk_idempotency_key_covers_a_lookup_that_misses(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeZendesk(search_lag_s=60) as fake:  # the lookup cannot see the new ticket
        adapter = adapters(zendesk_config(fake.url))
        fake.inject(applied_then_timeout(hang_s=HANG_S, method="POST"))
        assert deliver(adapter, make_ticket()).retryable
        second = deliver(adapter, make_ticket(), attempt=2)
        third = deliver(adapters(zendesk_config(fake.url)), make_ticket(), attempt=3)
        posts = fake.requests_for("POST")
    assert second.ok and third.ok and second.external_id == third.external_id == "1"
    assert len(posts) == 3 and len({p.headers["idempotency-key"] for p in posts}) == 1
    assert fake.replays == 2
    assert len(fake.tickets) == 1


# ---- the generic webhook ------------------------------------------------------------------------


def test_webhook_request_is_signed_and_carries_the_order(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeWebhookReceiver(SECRET, clock=lambda: NOW) as receiver:
        config = DeskConfig("webhook", receiver.url + "/hooks/edgewatch", SECRET, timeout_s=0.3)
        adapter = adapters(config)
        outcome = deliver(adapter, make_ticket(), delivery_id="dlv-77")
        (post,) = receiver.requests
    assert outcome.ok and outcome.status_code == 200 and outcome.request_count == 1
    assert (post.method, post.path) == ("POST", "/hooks/edgewatch")
    assert "authorization" not in post.headers
    assert post.headers["content-type"] == "application/json"
    assert post.headers["webhook-id"] == "dlv-77"
    assert post.headers["webhook-timestamp"] == str(int(NOW))
    assert verify(SECRET, post.headers, post.body, NOW) == "dlv-77"
    assert post.json == {
        "type": "work_order.created",
        "timestamp": "2026-05-28T20:26:40Z",
        "data": make_ticket().payload,
    }
    assert receiver.deliveries == {"dlv-77": post.json}


def test_webhook_retries_reuse_the_id_so_the_receiver_dedups(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeWebhookReceiver(SECRET, clock=lambda: NOW) as receiver:
        adapter = adapters(DeskConfig("webhook", receiver.url, SECRET, timeout_s=0.3))
        receiver.inject(applied_then_timeout(hang_s=HANG_S))
        assert deliver(adapter, make_ticket()).retryable
        assert deliver(adapter, make_ticket(), attempt=2).ok
        assert deliver(adapter, make_ticket(event="commented", comment="x"), delivery_id="dlv-2").ok
    assert list(receiver.deliveries) == ["dlv-1", "dlv-2"]
    assert receiver.duplicates == 1


def test_webhook_refused_signature_is_permanent_and_answers_name_the_ticket(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeWebhookReceiver(new_secret(), clock=lambda: NOW) as receiver:
        outcome = deliver(adapters(DeskConfig("webhook", receiver.url, SECRET)), make_ticket())
        assert outcome.permanent and outcome.status_code == 401
        assert receiver.rejected == ["no matching signature"]
    reply = {"external_id": 4711, "external_ref": "FM-4711"}
    with FakeWebhookReceiver(SECRET, clock=lambda: NOW, reply=reply) as receiver:
        outcome = deliver(adapters(DeskConfig("webhook", receiver.url, SECRET)), make_ticket())
        assert (outcome.external_id, outcome.external_ref) == ("4711", "FM-4711")


def test_webhook_payload_that_is_not_json_is_permanent(
    adapters: Callable[[DeskConfig], DeskAdapter],
) -> None:
    with FakeWebhookReceiver(SECRET, clock=lambda: NOW) as receiver:
        adapter = adapters(DeskConfig("webhook", receiver.url, SECRET))
        outcome = deliver(adapter, make_ticket(payload={"at": datetime(2026, 1, 1)}))
        assert outcome.permanent and "not JSON" in outcome.detail
        assert receiver.requests == []


def test_a_shared_client_is_used_and_left_open() -> None:
    with FakeWebhookReceiver(SECRET, clock=lambda: NOW) as receiver, httpx.Client() as client:
        adapter = make_adapter(
            DeskConfig("webhook", receiver.url, SECRET), client, clock=lambda: NOW
        )
        assert deliver(adapter, make_ticket()).ok
        adapter.close()
        assert not client.is_closed
        assert client.post(receiver.url, content=b"{}").status_code == 401  # unsigned


# ---- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("1e9", 86_400.0),  # at most a day
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), True), 30.0),
        ("Thu, 28 May 2026 20:27:40 GMT", 60.0),
        ("Wed, 01 Jan 2020 00:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        *[(status, True) for status in (400, 401, 403, 404, 410, 422)],
        *[(status, False) for status in (408, 409, 425, 429, 500, 599)],
    ],
)
def test_refusal_classification(status: int, permanent: bool) -> None:
    outcome = refusal(status, {"retry-after": "5"}, '{"error": "x"}', "create ticket", NOW)
    assert (outcome.ok, outcome.permanent, outcome.status_code) == (False, permanent, status)
    assert outcome.retry_after_s == (None if permanent else 5.0)
    assert outcome.detail.startswith(f"create ticket: HTTP {status}")


def test_refusal_detail_is_short_and_on_one_line() -> None:
    outcome = refusal(400, {}, "bad\n" * 500, "create ticket", NOW)
    assert "\n" not in outcome.detail and len(outcome.detail) <= 400


# ---- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (dataclasses.replace(servicenow_config("http://x"), kind="email"), "desk.kind"),  # type: ignore[arg-type]
        (servicenow_config("ftp://desk.example.com"), "desk.url"),
        (servicenow_config("desk.example.com"), "desk.url"),
        (servicenow_config("https://admin:pw@desk.example.com"), "desk.url"),
        (servicenow_config("https://x", secret="s3cr3t"), "desk.secret"),  # noqa: S106
        (servicenow_config("https://x", timeout_s=0), "desk.timeout_s"),
        (servicenow_config("https://x", username=" "), "desk.username"),
        (servicenow_config("https://x", token=""), "desk.token"),
        (servicenow_config("https://x", options={"group": "x"}), "desk.options.group"),
        (jira_config("https://x", service_desk_id=""), "desk.options.service_desk_id"),
        (jira_config("https://x", request_type_id="Fault"), "desk.options.request_type_id"),
        (jira_config("https://x", search_path="rest/api/2/search"), "desk.options.search_path"),
        (jira_config("https://x", index_settle_s="soon"), "desk.options.index_settle_s"),
        (zendesk_config("https://x", options={"group_id": "ops"}), "desk.options.group_id"),
        (
            zendesk_config("https://x", options={"service_desk_id": "1"}),
            "desk.options.service_desk_id",
        ),
        (DeskConfig("webhook", "https://x/hook", SECRET, options={"a": "b"}), "desk.options.a"),
    ],
)
def test_bad_configs_name_the_key(config: DeskConfig, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_adapter(config)
    assert caught.value.key == key
    assert "s3cr3t" not in str(caught.value) and "pw@" not in str(caught.value)


def test_good_configs_make_the_right_adapter() -> None:
    for config in (
        DeskConfig("webhook", "https://hooks.example.com/x", SECRET),
        servicenow_config("https://acme.service-now.com"),
        jira_config("https://acme.atlassian.net"),
        zendesk_config("https://acme.zendesk.com", options={"group_id": "360001"}),
    ):
        adapter = make_adapter(config)
        assert adapter.kind == config.kind
        adapter.close()


def test_outcomes_serialise_for_the_delivery_record() -> None:
    outcome = Outcome(ok=False, status_code=503, retry_after_s=2.0, detail="x", request_count=1)
    assert json.loads(json.dumps(dataclasses.asdict(outcome)))["retry_after_s"] == 2.0
    assert outcome.retryable and not Outcome(ok=True).retryable
