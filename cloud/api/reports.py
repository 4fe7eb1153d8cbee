"""Monthly energy-efficiency reports: request one, list a client's, fetch one in each format.

``POST /v1/clients/{client_id}/reports`` claims the month and answers 202 with the
report's metadata (status ``generating``); the report is made after the response, in the
API process (:func:`cloud.reports.service.generate`), and ``GET /v1/reports/{report_id}``
tells when it is ``ready`` (or ``failed``, with the error). The monthly schedule
(``edgewatch-cloud reports``) and the command line store their reports in the same table.
Tenant isolation as everywhere: a facility manager sees their own client's reports,
others answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, BackgroundTasks, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.deps import CurrentPrincipal, SessionDep, SettingsDep, StoreDep
from cloud.api.errors import ERROR_RESPONSES
from cloud.api.params import Limit, Offset
from cloud.api.schemas import ErrorBody
from cloud.auth.principal import Principal
from cloud.reports import service
from cloud.reports.collect import Options
from cloud.reports.models import Report, ReportStatus
from cloud.tsdb.base import TimeSeriesStore

router = APIRouter(prefix="/v1", tags=["reports"], responses=ERROR_RESPONSES)

FORMATS: Final = {
    "html": ("report.html", "text/html; charset=utf-8"),
    "pdf": ("report.pdf", "application/pdf"),
    "json": ("report.json", "application/json"),
    "csv_zip": ("report.csv.zip", "application/zip"),
}
"""Stored output → its file name and media type."""
HTML_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""The report page runs no script and loads nothing (its CSS and charts are inline)."""
NOT_READY: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": ErrorBody, "description": "the report is being generated, or failed"}
}


class ReportRequest(BaseModel):
    month: Annotated[
        str,
        Field(
            pattern=r"^[0-9]{4}-[0-9]{2}$",
            description="YYYY-MM: the local calendar month at each of the client's sites; "
            "it must have ended at all of them",
        ),
    ]

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"month": "2026-01"}]}
    )


class ReportOut(BaseModel):
    id: str
    client_id: str
    month: str
    status: ReportStatus
    error: str | None = Field(description="why the last attempt failed")
    requested_by: str = Field(description="schedule, cli or user:<id>")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    generated_at: datetime | None = Field(description="when the stored outputs were made")
    summary: dict[str, Any] | None = Field(
        description="headline figures: kWh, CO2, costs per currency, savings"
    )
    links: dict[str, str] = Field(description="the outputs, once generated_at is set")

    @classmethod
    def of(cls, report: Report) -> ReportOut:
        base = f"/v1/reports/{report.id}"
        links = (
            {fmt: f"{base}/{name}" for fmt, (name, _) in FORMATS.items()}
            if report.generated_at is not None
            else {}
        )
        return cls(
            id=report.id,
            client_id=report.client_id,
            month=report.month,
            status=report.status,
            error=report.error,
            requested_by=report.requested_by,
            attempts=report.attempts,
            created_at=report.created_at,
            started_at=report.started_at,
            finished_at=report.finished_at,
            generated_at=report.generated_at,
            summary=report.summary,
            links=links,
        )


def _generate(
    sessions: sessionmaker[Session],
    store: TimeSeriesStore,
    claim: service.Claim,
    options: Options,
) -> None:
    service.generate(sessions, store, claim, options)


@router.post(
    "/clients/{client_id}/reports",
    response_model=ReportOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"model": ErrorBody, "description": "the service desk may not generate reports"},
        409: {"model": ErrorBody, "description": "the month is being generated already"},
    },
    summary="Generate the client's report of a month (again); made after the response",
)
def request_report(
    client_id: str,
    body: ReportRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentPrincipal,
) -> ReportOut:
    report, claim = service.request_report(session, principal, client_id, body.month)
    sessions = cast(sessionmaker[Session], request.app.state.sessionmaker)
    background.add_task(_generate, sessions, store, claim, Options.from_settings(settings))
    return ReportOut.of(report)


@router.get(
    "/clients/{client_id}/reports",
    response_model=list[ReportOut],
    summary="The client's reports, newest month first",
)
def list_reports(
    client_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[ReportOut]:
    rows = service.list_reports(session, principal, client_id, limit=limit, offset=offset)
    return [ReportOut.of(r) for r in rows]


@router.get("/reports/{report_id}", response_model=ReportOut, summary="One report's metadata")
def get_report(report_id: str, session: SessionDep, principal: CurrentPrincipal) -> ReportOut:
    return ReportOut.of(service.get_report(session, principal, report_id))


def _file(
    session: Session, principal: Principal, report_id: str, fmt: str, inline: bool
) -> Response:
    report, data = service.output(session, principal, report_id, fmt)
    name, media_type = FORMATS[fmt]
    disposition = "inline" if inline else "attachment"
    headers = {
        "Content-Disposition": f'{disposition}; filename="energy-report-{report.month}-{name}"',
        "X-Content-Type-Options": "nosniff",
    }
    if fmt == "html":
        headers["Content-Security-Policy"] = HTML_POLICY
    return Response(content=data, media_type=media_type, headers=headers)


def _content(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}}, "description": "the file"}, **NOT_READY}


@router.get(
    "/reports/{report_id}/report.html",
    response_class=Response,
    responses=_content("text/html"),
    summary="The report as one self-contained HTML page (charts inline, no script)",
)
def report_html(report_id: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    return _file(session, principal, report_id, "html", inline=True)


@router.get(
    "/reports/{report_id}/report.pdf",
    response_class=Response,
    responses=_content("application/pdf"),
    summary="The report as a PDF (the same page, paginated)",
)
def report_pdf(report_id: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    return _file(session, principal, report_id, "pdf", inline=True)


@router.get(
    "/reports/{report_id}/report.json",
    response_class=Response,
    responses=_content("application/json"),
    summary="Every figure of the report as JSON",
)
def report_json(report_id: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    return _file(session, principal, report_id, "json", inline=True)


@router.get(
    "/reports/{report_id}/report.csv.zip",
    response_class=Response,
    responses=_content("application/zip"),
    summary="Every figure of the report as CSV tables (one per kind of row), zipped",
)
def report_csv(report_id: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    return _file(session, principal, report_id, "csv_zip", inline=False)
