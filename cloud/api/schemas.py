"""Request and response bodies of the REST API (pydantic), with OpenAPI examples.

Shapes and ranges are declared here so that they appear in the OpenAPI schema; the
registry services check the same rules again (the command line uses them without these
models). Responses are built from ORM objects inside the request's unit of work
(``from_attributes``), never by serialising ORM objects after the session closed.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cloud.auth.gateways import is_active
from cloud.registry.models import (
    Criticality,
    Device,
    EventKind,
    Gateway,
    GatewayCredential,
    Role,
    SiteKind,
)
from cloud.tsdb.base import FieldValue
from cloud.workorders.inbound import Received
from cloud.workorders.models import DeliveryState, InboundOutcome, Source, WorkOrder
from cloud.workorders.policy import State
from cloud.workorders.queries import Delivery, OrderDetail
from cloud.workorders.service import order_number

Ident = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="an id as in the gateway config (edge_agent.protocol.IDENT_RE)",
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
OptionalText = Annotated[str | None, Field(max_length=1000)]
OccupantFlag = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]

EXAMPLE_CLIENT_ID = "6c2f4a52-3a8e-4c5b-9a55-0f3b1c8d2e10"
EXAMPLE_SITE_ID = "0d6f8b1e-5a3c-4f0e-8b7a-2c9d4e6f1a23"
EXAMPLE_DEVICE_ID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """Every error response: a stable machine-readable ``error`` and a human ``detail``."""

    error: str = Field(
        description="not_found, conflict, invalid_input, unauthorized, forbidden, "
        "registry_unavailable, store_unavailable, store_error, method_not_allowed, "
        "too_large, internal_error"
    )
    detail: Any = Field(description="what went wrong (a list of problems for invalid input)")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": "not_found", "detail": "site not found"}]}
    )


# ---- auth ---------------------------------------------------------------------------------


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="seconds until the token expires")


class ApiKeyIn(_In):
    name: Name = Field(description="what the key is for, e.g. 'grafana'")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "grafana"}]})


class ApiKeyOut(_Out):
    id: str
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyOut):
    key: str = Field(description="the API key; shown this once, store it now")


# ---- clients ------------------------------------------------------------------------------


class ClientIn(_In):
    name: Name

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Jumeirah Hotels"}]}
    )


class ClientPatch(_In):
    name: Name | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Jumeirah Hotels LLC"}]}
    )


class ClientOut(_Out):
    id: str
    name: str
    created_at: datetime


# ---- sites --------------------------------------------------------------------------------

Latitude = Annotated[float | None, Field(ge=-90, le=90)]
Longitude = Annotated[float | None, Field(ge=-180, le=180)]
FloorArea = Annotated[float | None, Field(gt=0, le=10_000_000, description="m²")]
Timezone = Annotated[
    str, Field(min_length=1, max_length=64, description="IANA name, e.g. Asia/Dubai")
]


class SiteIn(_In):
    client_id: str
    name: Name
    kind: SiteKind
    floor_area_m2: FloorArea = None
    latitude: Latitude = None
    longitude: Longitude = None
    address: OptionalText = None
    timezone: Timezone = "UTC"
    tariff: dict[str, Any] | None = Field(
        None,
        description="flat or time-of-use, see cloud.energy.tariff; e.g. "
        '{"kind": "flat", "currency": "AED", "price_per_kwh": 0.38}',
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_id": EXAMPLE_CLIENT_ID,
                    "name": "Dubai Marina tower",
                    "kind": "hotel",
                    "floor_area_m2": 42000,
                    "latitude": 25.08,
                    "longitude": 55.14,
                    "address": "Al Marsa St, Dubai Marina",
                    "timezone": "Asia/Dubai",
                    "tariff": {"kind": "flat", "currency": "AED", "price_per_kwh": 0.38},
                }
            ]
        },
    )


class SitePatch(_In):
    """Facility managers may send only address, latitude, longitude and floor_area_m2."""

    name: Name | None = None
    kind: SiteKind | None = None
    floor_area_m2: FloorArea = None
    latitude: Latitude = None
    longitude: Longitude = None
    address: OptionalText = None
    timezone: Timezone | None = None
    tariff: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"address": "Al Marsa St 12, Dubai Marina"}]},
    )


class SiteOut(_Out):
    id: str
    client_id: str
    name: str
    kind: SiteKind
    floor_area_m2: float | None
    latitude: float | None
    longitude: float | None
    address: str | None
    timezone: str
    tariff: dict[str, Any] | None
    created_at: datetime


class SiteRollupOut(_Out):
    start: float = Field(description="interval start, seconds since the epoch")
    devices_reporting: int
    energy_kwh: float
    windows: int
    anomalous_windows: int
    mean_score: float | None
    max_score: float | None
    alarms_raised: int


# ---- gateways -----------------------------------------------------------------------------


class GatewayIn(_In):
    id: Ident
    site_id: str
    name: Annotated[str | None, Field(max_length=200)] = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "gw-dxb-1", "site_id": EXAMPLE_SITE_ID, "name": "plant room controller"}
            ]
        },
    )


class GatewayPatch(_In):
    name: Annotated[str | None, Field(max_length=200)] = None
    site_id: str | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "roof plant controller"}]}
    )


class GatewayOut(BaseModel):
    id: str
    site_id: str
    client_id: str
    name: str | None
    created_at: datetime
    last_seen_at: datetime | None
    last_seq: int | None

    @classmethod
    def of(cls, gateway: Gateway) -> GatewayOut:
        return cls(
            id=gateway.id,
            site_id=gateway.site_id,
            client_id=gateway.site.client_id,
            name=gateway.name,
            created_at=gateway.created_at,
            last_seen_at=gateway.last_seen_at,
            last_seq=gateway.last_seq,
        )


class CredentialOut(BaseModel):
    id: str
    gateway_id: str
    mqtt_username: str = Field(description="the MQTT username that goes with this secret")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, credential: GatewayCredential, now: datetime) -> CredentialOut:
        return cls(
            id=credential.id,
            gateway_id=credential.gateway_id,
            mqtt_username=credential.mqtt_username,
            created_at=credential.created_at,
            expires_at=credential.expires_at,
            revoked_at=credential.revoked_at,
            active=is_active(credential, now),
        )


class CredentialIssued(CredentialOut):
    secret: str = Field(
        description="the MQTT password and HTTPS uplink bearer token; shown this once"
    )


# ---- devices ------------------------------------------------------------------------------


class DeviceIn(_In):
    gateway_id: str
    name: Ident = Field(description="the device's id in its gateway's config")
    asset_type: Ident
    profile: Ident | None = None
    make: Annotated[str | None, Field(max_length=200)] = None
    model: Annotated[str | None, Field(max_length=200)] = None
    serial: Annotated[str | None, Field(max_length=200)] = None
    install_date: date | None = None
    warranty_end: date | None = None
    criticality: Criticality = Criticality.MEDIUM
    location: OptionalText = None
    occupant_flags: Annotated[list[OccupantFlag], Field(max_length=16)] = []

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "gateway_id": "gw-dxb-1",
                    "name": "cc-dxb-01",
                    "asset_type": "compressor",
                    "profile": "ew-cc100",
                    "make": "Bitzer",
                    "model": "4FES-5Y",
                    "serial": "BZ-2291-77",
                    "install_date": "2023-04-01",
                    "warranty_end": "2026-03-31",
                    "criticality": "high",
                    "location": "roof, plant room 2",
                    "occupant_flags": ["vulnerable_occupant"],
                }
            ]
        },
    )


class DevicePatch(_In):
    """Facility managers may send only location and occupant_flags."""

    gateway_id: str | None = None
    name: Ident | None = None
    asset_type: Ident | None = None
    profile: Ident | None = None
    make: Annotated[str | None, Field(max_length=200)] = None
    model: Annotated[str | None, Field(max_length=200)] = None
    serial: Annotated[str | None, Field(max_length=200)] = None
    install_date: date | None = None
    warranty_end: date | None = None
    criticality: Criticality | None = None
    location: OptionalText = None
    occupant_flags: Annotated[list[OccupantFlag] | None, Field(max_length=16)] = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"location": "roof, plant room 3", "occupant_flags": ["vulnerable_occupant"]}
            ]
        },
    )


class DeviceOut(BaseModel):
    id: str
    gateway_id: str
    site_id: str
    client_id: str
    name: str
    asset_type: str
    profile: str | None
    make: str | None
    model: str | None
    serial: str | None
    install_date: date | None
    warranty_end: date | None
    criticality: Criticality
    location: str | None
    occupant_flags: list[str]
    created_at: datetime

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            id=device.id,
            gateway_id=device.gateway_id,
            site_id=device.gateway.site_id,
            client_id=device.gateway.site.client_id,
            name=device.name,
            asset_type=device.asset_type,
            profile=device.profile,
            make=device.make,
            model=device.model,
            serial=device.serial,
            install_date=device.install_date,
            warranty_end=device.warranty_end,
            criticality=device.criticality,
            location=device.location,
            occupant_flags=list(device.occupant_flags or []),
            created_at=device.created_at,
        )


class DeviceEventIn(_In):
    kind: EventKind
    summary: Annotated[str, Field(min_length=1, max_length=10_000)]
    at: AwareDatetime | None = Field(None, description="when it happened (default: now)")
    detail: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "part_replaced",
                    "summary": "replaced the condenser fan motor",
                    "at": "2026-02-11T09:30:00Z",
                    "detail": {"part": "fan motor", "ticket": "INC0012345"},
                }
            ]
        },
    )


class DeviceEventOut(_Out):
    id: str
    device_id: str
    at: datetime
    kind: EventKind
    summary: str
    detail: dict[str, Any] | None
    created_by: str | None


class LatestOut(BaseModel):
    ts: float = Field(description="seconds since the epoch")
    tags: dict[str, str]
    fields: dict[str, FieldValue]


class FeatureRowOut(_Out):
    ts: float = Field(description="the window's end, seconds since the epoch")
    group: str
    features: dict[str, float]


class EnergyIntervalOut(_Out):
    start: float
    counter: str
    last: float | None
    consumed: float | None


class LifecycleOut(BaseModel):
    """A device's file: what it is, where, what happened to it, what it reports."""

    device: DeviceOut
    gateway: GatewayOut
    site: SiteOut
    client: ClientOut
    events: list[DeviceEventOut] = Field(description="newest first")
    latest: dict[str, LatestOut] = Field(
        description="the newest stored point of each measurement (features, score, alarm, "
        "energy, health)"
    )
    last_alarm: LatestOut | None = Field(description="the newest alarm record, if any")


# ---- users --------------------------------------------------------------------------------

Password = Annotated[str, Field(min_length=10, max_length=1024)]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class UserIn(_In):
    email: Email
    role: Role
    client_id: str | None = Field(None, description="required for facility managers only")
    name: Annotated[str | None, Field(max_length=200)] = None
    password: Password | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "fm@jumeirah.example",
                    "role": "facility_manager",
                    "client_id": EXAMPLE_CLIENT_ID,
                    "name": "Layla Haddad",
                    "password": "correct horse battery",
                }
            ]
        },
    )


class UserPatch(_In):
    email: Email | None = None
    name: Annotated[str | None, Field(max_length=200)] = None
    role: Role | None = None
    client_id: str | None = None
    active: bool | None = None
    password: Password | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Layla Haddad-Khan"}]}
    )


class UserOut(_Out):
    id: str
    email: str
    name: str | None
    role: Role
    client_id: str | None
    active: bool
    created_at: datetime


# ---- health -------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description='"ok", or why the dependency failed')


# ---- risk ---------------------------------------------------------------------------------


class TopSignalOut(BaseModel):
    signal: str
    share: float = Field(description="the signal's share of the risk")
    trend_per_day: float


class RiskScoreOut(_Out):
    """One assessment of a device: P(failure within 24 h, within the horizon and within
    the alert horizon), the likeliest fault, a 0-100 health index and the signals that
    drive the alert risk."""

    ts: datetime = Field(description="the end of the window the assessment is for")
    computed_at: datetime
    p24: float
    p72: float = Field(description="P(failure within horizon_h hours)")
    horizon_h: float
    p_alert: float | None = Field(
        description="P(failure within alert_horizon_h hours), which alert is judged on; "
        "null for assessments made before alerts had their own horizon (they alerted on p72)"
    )
    alert_horizon_h: float | None
    fault_type: str
    fault_probs: dict[str, float]
    health: int = Field(description="0 (failing) to 100 (healthy)")
    anomaly_score: float | None
    alert: bool = Field(description="p_alert reached the asset type's alert threshold")
    top_signals: list[TopSignalOut] = Field(description="largest share first")
    model: str

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "ts": "2026-02-11T09:00:00Z",
                    "computed_at": "2026-02-11T09:00:04Z",
                    "p24": 0.18,
                    "p72": 0.64,
                    "horizon_h": 72.0,
                    "p_alert": 0.97,
                    "alert_horizon_h": 336.0,
                    "fault_type": "refrigerant_leak",
                    "fault_probs": {"refrigerant_leak": 0.81, "condenser_fouling": 0.12},
                    "health": 41,
                    "anomaly_score": 2.7,
                    "alert": True,
                    "top_signals": [
                        {"signal": "superheat", "share": 0.46, "trend_per_day": 0.9},
                        {"signal": "suction_pressure", "share": 0.27, "trend_per_day": -0.3},
                    ],
                    "model": "compressor-risk",
                }
            ]
        },
    )


class DeviceRiskOut(BaseModel):
    device_id: str
    latest: RiskScoreOut | None = Field(description="the newest assessment; null: never scored")
    history: list[RiskScoreOut] = Field(description="assessments in [start, end), oldest first")


class SiteDeviceRiskOut(BaseModel):
    device_id: str
    device_name: str
    asset_type: str
    criticality: Criticality
    risk: RiskScoreOut | None = Field(description="the newest assessment; null: never scored")


# ---- work orders --------------------------------------------------------------------------

EXAMPLE_ORDER_ID = "3f6e1a2b-7c4d-4e8f-9a0b-1c2d3e4f5a6b"
EXAMPLE_TECHNICIAN_ID = "5b7c9d1e-2f3a-4b5c-8d6e-7f8091a2b3c4"


class WorkOrderOut(BaseModel):
    """A work order: what is predicted to fail, how urgent it is, what the technician
    needs, where it stands."""

    id: str
    number: str = Field(description="the order's number as people quote it, e.g. WO-000042")
    client_id: str
    site_id: str
    device_id: str
    fault: str = Field(description="the predicted fault type, or alarm:<name>")
    source: Source
    state: State
    open: bool = Field(description="not closed or cancelled")
    priority: int = Field(description="1 (urgent) to 4 (low)")
    p24: float | None
    p72: float | None
    health: int | None
    lead_time_h: float | None = Field(description="expected hours to failure, if predicted")
    risk_at: datetime | None
    problem: str
    cause: str
    remedy: str
    evidence: dict[str, Any]
    skills: list[str]
    parts: dict[str, int] = Field(description="part number → quantity")
    suggested_technician_id: str | None
    suggestion: dict[str, Any] | None
    assigned_technician_id: str | None
    sla_due_at: datetime
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    failure_prevented: bool | None
    outcome_note: str | None

    @classmethod
    def of(cls, o: WorkOrder) -> WorkOrderOut:
        return cls(
            id=o.id,
            number=order_number(o.number),
            client_id=o.client_id,
            site_id=o.site_id,
            device_id=o.device_id,
            fault=o.fault,
            source=o.source,
            state=o.state,
            open=o.open_key is not None,
            priority=o.priority,
            p24=o.p24,
            p72=o.p72,
            health=o.health,
            lead_time_h=o.lead_time_h,
            risk_at=o.risk_at,
            problem=o.problem,
            cause=o.cause,
            remedy=o.remedy,
            evidence=dict(o.evidence or {}),
            skills=list(o.skills or []),
            parts=dict(o.parts or {}),
            suggested_technician_id=o.suggested_technician_id,
            suggestion=o.suggestion,
            assigned_technician_id=o.assigned_technician_id,
            sla_due_at=o.sla_due_at,
            opened_at=o.opened_at,
            updated_at=o.updated_at,
            closed_at=o.closed_at,
            failure_prevented=o.failure_prevented,
            outcome_note=o.outcome_note,
        )


class WorkOrderEventOut(_Out):
    seq: int
    at: datetime
    kind: str = Field(description="opened, updated, state_changed, commented, assigned")
    actor: str = Field(description="scorer, alarm, desk:<id>, user:<id> or system")
    from_state: str | None
    to_state: str | None
    note: str | None
    detail: dict[str, Any] | None


class ReservationOut(_Out):
    part_number: str
    depot_id: str | None
    quantity: int = Field(description="what the repair needs")
    reserved: int = Field(description="held at the depot")
    short: int = Field(description="what no depot could give")
    released: bool = Field(description="given back (cancelled) or used (closed)")


class TicketOut(BaseModel):
    desk_id: str
    desk_kind: str
    external_id: str = Field(description="the desk's id of the ticket")
    external_ref: str | None = Field(description="the number people quote, e.g. INC0012345")
    created_at: datetime


class WorkOrderDetailOut(WorkOrderOut):
    device_name: str
    asset_type: str
    site_name: str
    events: list[WorkOrderEventOut] = Field(description="the order's history, oldest first")
    reservations: list[ReservationOut]
    tickets: list[TicketOut]

    @classmethod
    def of_detail(cls, d: OrderDetail) -> WorkOrderDetailOut:
        return cls(
            **WorkOrderOut.of(d.order).model_dump(),
            device_name=d.device_name,
            asset_type=d.asset_type,
            site_name=d.site_name,
            events=[WorkOrderEventOut.model_validate(e) for e in d.events],
            reservations=[ReservationOut.model_validate(r) for r in d.reservations],
            tickets=[
                TicketOut(
                    desk_id=t.ref.desk_id,
                    desk_kind=t.desk_kind,
                    external_id=t.ref.external_id,
                    external_ref=t.ref.external_ref,
                    created_at=t.ref.created_at,
                )
                for t in d.tickets
            ],
        )


Note = Annotated[str | None, Field(max_length=10_000)]


class TransitionIn(_In):
    state: State
    note: Note = None
    failure_prevented: bool | None = Field(
        None, description="on complete or closed: did the visit prevent the failure"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"state": "approved", "note": "approved by the facility manager"},
                {
                    "state": "complete",
                    "note": "leak at the suction line brazed, recharged 2.1 kg",
                    "failure_prevented": True,
                },
            ]
        },
    )


class CommentIn(_In):
    text: Annotated[str, Field(min_length=1, max_length=10_000)]

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "access to the roof via the service lift"}]},
    )


class AssignmentIn(_In):
    """``{"technician_id": null}`` clears the assignment (the suggestion stands again)."""

    technician_id: Annotated[str | None, Field(max_length=36)] = Field(
        description="the technician; null clears the assignment"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"technician_id": EXAMPLE_TECHNICIAN_ID}]},
    )


class DeliveryAttemptOut(_Out):
    attempt: int
    at: datetime
    worker: str
    ok: bool
    status_code: int | None
    duration_ms: float
    detail: str


class DeliveryOut(BaseModel):
    """One work-order change on its way to one desk."""

    id: int
    work_order_id: str
    desk_id: str
    event: str = Field(description="created, updated, state_changed, commented")
    comment: str | None = Field(description="the note the change carries to the desk")
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    attempt_log: list[DeliveryAttemptOut] = Field(description="oldest first")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        m = d.message
        return cls(
            id=m.id,
            work_order_id=m.work_order_id,
            desk_id=m.desk_id,
            event=m.event,
            comment=m.comment,
            state=m.state,
            attempts=m.attempts,
            created_at=m.created_at,
            next_attempt_at=m.next_attempt_at,
            delivered_at=m.delivered_at,
            last_error=m.last_error,
            attempt_log=[DeliveryAttemptOut.model_validate(a) for a in d.attempts],
        )


# ---- service desks' status posts ------------------------------------------------------------

EXAMPLE_SYS_ID = "6816f79cc0a8016401c5a33be04be441"

DESK_STATUS_EXAMPLES: dict[str, dict[str, Any]] = {
    "webhook": {
        "summary": "webhook desk: our order id and state (or the data of an envelope)",
        "value": {
            "order_id": EXAMPLE_ORDER_ID,
            "state": "approved",
            "note": "approved by the facility team",
        },
    },
    "servicenow": {
        "summary": "ServiceNow: the incident's fields from a business rule (state 6 = Resolved)",
        "value": {
            "correlation_id": EXAMPLE_ORDER_ID,
            "sys_id": EXAMPLE_SYS_ID,
            "number": "INC0010001",
            "state": "6",
            "close_notes": "leak at the suction line brazed, recharged 2.1 kg",
        },
    },
    "jira": {
        "summary": "Jira Service Management: the issue (order in the ew- label)",
        "value": {
            "webhookEvent": "jira:issue_updated",
            "issue": {
                "key": "SD-12",
                "fields": {
                    "status": {"name": "In Progress"},
                    "labels": [f"ew-{EXAMPLE_ORDER_ID}"],
                },
            },
            "comment": {"body": "technician on the way"},
        },
    },
    "zendesk": {
        "summary": "Zendesk: a trigger's ticket (order in external_id)",
        "value": {
            "ticket": {"id": 35436, "external_id": EXAMPLE_ORDER_ID, "status": "solved"},
            "comment": "fan bearing replaced",
        },
    },
}
"""One body per desk kind (``cloud.desk.inbound`` has the formats); the API tests parse
every one."""

DESK_STATUS_SCHEMA: dict[str, Any] = {
    "title": "DeskStatusIn",
    "type": "object",
    "description": "The desk's own JSON, by the desk's kind: webhook `{order_id, "
    "external_id?, state, note?}` (bare or as an envelope's `data`); ServiceNow the "
    "incident (`correlation_id`, `sys_id`, `state`, `work_notes`/`close_notes`); Jira the "
    "issue (`issue.key`, `issue.fields.status.name`, label `ew-<order id>`, `comment`); "
    "Zendesk the ticket (`ticket.id`, `ticket.external_id`, `ticket.status`, `comment`) or "
    "an event webhook's `detail`. Every kind may add a top-level `note`.",
    "examples": [DESK_STATUS_EXAMPLES["webhook"]["value"]],
}


class DeskStatusOut(BaseModel):
    """What a desk's status post did to its order (for a replay: what its first copy did)."""

    order_id: str
    number: str = Field(description="the order's number, e.g. WO-000042")
    state_before: State
    state_after: State
    outcome: InboundOutcome = Field(
        description="moved to the requested state; commented: it was in that state "
        "already and the post's note became a comment; unchanged: in that state already, "
        "no note (rejected is never a 200: a move the life cycle refuses answers 409)"
    )
    duplicate: bool = Field(
        description="a replay of a post already received (same webhook-id): nothing changed"
    )
    message_id: str = Field(description="the post's webhook-id")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": EXAMPLE_ORDER_ID,
                    "number": "WO-000042",
                    "state_before": "in_progress",
                    "state_after": "complete",
                    "outcome": "moved",
                    "duplicate": False,
                    "message_id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                }
            ]
        }
    )

    @classmethod
    def of(cls, r: Received) -> DeskStatusOut:
        return cls(
            order_id=r.order_id,
            number=r.number,
            state_before=State(r.state_before),
            state_after=State(r.state_after),
            outcome=r.outcome,
            duplicate=r.duplicate,
            message_id=r.message_id,
        )
