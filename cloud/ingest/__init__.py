"""Ingest: what gateways send, validated, stored once, acknowledged.

``records`` maps uplink records onto time-series points (pure); ``directory`` knows which
gateway and device belong to which client and site; ``service`` turns one batch into
points, a store write and an ack; ``worker`` runs the service behind the MQTT shared
subscription, ``cloud.api.uplink`` behind the HTTPS endpoint.
"""
