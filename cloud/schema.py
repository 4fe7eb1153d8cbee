"""Every SQL table of the cloud in one ``MetaData``: what Alembic migrates and compares.

Import this (not one package's models) wherever the whole schema is meant: the
migration environment, the schema tests, ``create_all`` in unit tests.
"""

from __future__ import annotations

import cloud.reports.models
import cloud.risk.models
import cloud.workorders.models
from cloud.registry.models import Base

metadata = Base.metadata
MODEL_MODULES = (cloud.risk.models, cloud.workorders.models, cloud.reports.models)
"""Imported for their tables (registered on ``Base.metadata``)."""
