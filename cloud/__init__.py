"""EdgeWatch cloud service: ingest workers, risk scoring, work orders, reports and the REST API."""
