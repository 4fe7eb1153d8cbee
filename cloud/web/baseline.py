"""Where the dashboard gets a site's expected energy use (its baseline) from.

The fleet and site pages compare the energy a site used this month with what it was
expected to use. The expectation comes from a :class:`BaselineSource` kept on
``app.state.baselines``: ``create_app`` sets the report service's
(:class:`cloud.reports.baselines.StoredBaselines`: the weather-normalised models the
reports fitted, :mod:`cloud.energy.baseline`, predicting from the month's outdoor
temperature). Where none is set, :class:`NoBaseline` answers None and the pages say "no
baseline yet". The dashboard never fits a baseline itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from cloud.registry.models import Site


class BaselineSource(Protocol):
    """Expected energy use of a site's monitored appliances."""

    def expected_kwh(self, site: Site, start: datetime, end: datetime) -> float | None:
        """The kWh the site's appliances were expected to use in ``[start, end)`` (aware
        datetimes; the dashboard asks for the current local month to date), or None when
        the site has no baseline. May raise a :class:`~cloud.errors.CloudError`; the page
        then says the baseline is unavailable."""
        ...


class NoBaseline:
    """The default source: no site has a baseline yet."""

    def expected_kwh(self, site: Site, start: datetime, end: datetime) -> float | None:
        return None
