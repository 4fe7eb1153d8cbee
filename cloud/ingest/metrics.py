"""Prometheus metrics of ingest (registered in the default registry, served by ``/metrics``
of the API process and by each MQTT worker process's own metrics port)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

BATCHES: Final = Counter(
    "edgewatch_ingest_batches",
    "Uplink batches handled, by transport and outcome "
    "(stored, rejected: a batch-level fault, unknown_gateway, store_unavailable and "
    "registry_unavailable: retried)",
    ["transport", "outcome"],
)
RECORDS: Final = Counter("edgewatch_ingest_records", "Records stored, by record kind", ["kind"])
REJECTED: Final = Counter(
    "edgewatch_ingest_rejected_records",
    "Records refused, by reason (named in the ack's rejected list when their seq can be "
    "read and is not a repeat within the batch)",
    ["reason"],
)
LAG: Final = Histogram(
    "edgewatch_ingest_lag_seconds",
    "From the newest record's timestamp to its being stored, per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 86_400),
)
STORE_SECONDS: Final = Histogram(
    "edgewatch_ingest_store_seconds",
    "Time-series store write latency per write (one write may carry several batches)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
STORE_ERRORS: Final = Counter(
    "edgewatch_ingest_store_errors",
    "Store writes that failed, by kind (unavailable: retried, refused: a bad write)",
    ["kind"],
)
QUEUED: Final = Gauge(
    "edgewatch_ingest_queued_batches", "Batches received from the broker and not yet stored"
)
ACKS: Final = Counter("edgewatch_ingest_acks", "Acks sent to gateways", ["transport"])
BATCH_SECONDS: Final = Histogram(
    "edgewatch_ingest_batch_seconds",
    "Time in an MQTT ingest worker per batch, from its arrival: to its being decoded and "
    "ready for the store (stage=prepared), to a store thread taking it into a write "
    "(stage=taken), and to its ack to the gateway (stage=acked)",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 10, 60),
)
BATCH_PREPARED: Final = BATCH_SECONDS.labels("prepared")
BATCH_TAKEN: Final = BATCH_SECONDS.labels("taken")
BATCH_ACKED: Final = BATCH_SECONDS.labels("acked")
