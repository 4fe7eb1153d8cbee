"""The SQL registry: clients, sites, gateways, devices, users and credentials."""
