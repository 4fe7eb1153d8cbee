"""From stored uplink points to "score this device now": ingest's hook to the scorer.

:class:`RequestSink` is given every batch of points ingest has just stored. An anomalous
window (a ``score`` point whose ``anomalous`` field is true) asks for a risk assessment of
its device; a raised local alarm asks for one too and carries the alarm (the scorer
decides whether it needs a visit). One :class:`~cloud.risk.models.RiskRequest` row per
device and reason per batch, in one insert; everything else costs a loop over the points.

A failure to record requests never fails the batch (the points are stored and will be
acknowledged): it is logged and counted, and the scorer's scheduled pass scores the
device anyway, minutes later instead of seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import RegistryUnavailable
from cloud.registry.models import site_shard
from cloud.risk.models import RiskRequest
from cloud.tsdb.base import Point

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "edgewatch_risk_requests_total",
    "Risk assessments asked for by ingest, by reason and result (recorded; retried: an "
    "alarm's batch left unacknowledged in an outage; failed: dropped in an outage; "
    "refused: the database refused it)",
    ["reason", "result"],
)


def requests_of(points: Sequence[Point]) -> list[dict[str, Any]]:
    """The request rows ``points`` call for (pure): one per device for anomalies, one per
    raised alarm."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for p in points:
        device = p.tags.get("device", "")
        if not device:
            continue
        if p.measurement == "score" and p.fields.get("anomalous") is True:
            rows.setdefault(
                (device, "anomaly"),
                {
                    "device_id": device,
                    "shard": site_shard(p.tags["site"]),
                    "reason": "anomaly",
                    "detail": {"score": p.fields.get("score"), "ts": p.ts_ns / 1e9},
                },
            )
        elif p.measurement == "alarm" and p.fields.get("state") == "raised":
            name = p.tags.get("name", "")
            rows[(device, "alarm:" + name)] = {
                "device_id": device,
                "shard": site_shard(p.tags["site"]),
                "reason": "alarm",
                "detail": {
                    "name": name,
                    "severity": p.fields.get("severity", ""),
                    "ts": p.ts_ns / 1e9,
                    "value": p.fields.get("value"),
                },
            }
    return list(rows.values())


class RequestSink:
    """Records the requests of stored points (``IngestService(notify=RequestSink(...))``)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __call__(self, points: Sequence[Point]) -> None:
        """Record the requests of ``points``; raises :class:`RegistryUnavailable` if the
        database is down and they include a raised alarm (see the module docstring)."""
        rows = requests_of(points)
        if not rows:
            return
        now = datetime.now(UTC)
        try:
            with self._sessions.begin() as session:
                session.execute(insert(RiskRequest), [r | {"created_at": now} for r in rows])
        except (IntegrityError, DataError) as exc:
            self._dropped(rows, "refused", exc)
            return
        except SQLAlchemyError as exc:
            if any(r["reason"] == "alarm" for r in rows):
                for r in rows:
                    REQUESTS.labels(r["reason"], "retried").inc()
                raise RegistryUnavailable(
                    f"cannot record {len(rows)} risk requests, among them a raised alarm "
                    f"(the batch is not acknowledged): {_brief(exc)}"
                ) from exc
            self._dropped(rows, "failed", exc)
            return
        for r in rows:
            REQUESTS.labels(r["reason"], "recorded").inc()

    @staticmethod
    def _dropped(rows: Sequence[dict[str, Any]], result: str, exc: SQLAlchemyError) -> None:
        for r in rows:
            REQUESTS.labels(r["reason"], result).inc()
        log.warning(
            "could not record %d risk requests (the scheduled pass will score "
            "these devices): %s",
            len(rows),
            _brief(exc),
        )


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
