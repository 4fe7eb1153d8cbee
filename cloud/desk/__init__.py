"""Work orders at the client's service desk: one adapter per desk kind (a Standard Webhooks
endpoint, ServiceNow, Jira Service Management, Zendesk) that creates and updates the
ticket of a work order exactly once per order, and the verification and parsing of the
status changes a desk posts back.

The outbox worker uses :mod:`cloud.desk.tickets` (the contract and :func:`make_adapter`);
the inbound route uses :func:`cloud.desk.inbound.verify_and_parse`.
"""
