"""The monthly energy-efficiency report of a client: where energy and money went, what to fix.

Per client and local calendar month (:mod:`cloud.reports.period`), every site's energy
from the devices' counters, its cost by tariff period, CO2, energy use intensity, the
weather-normalised baseline and savings (CalTRACK, ASHRAE Guideline 14), equipment
efficiency, like units, fault waste and recommendations; as one HTML page with charts,
the same page as a PDF, and every figure as JSON and CSV tables.

Layers, each importing only those above it:

- :mod:`cloud.reports.period`: months as ``YYYY-MM`` and their local bounds.
- :mod:`cloud.reports.collect`: the registry and the time-series store → the report's
  inputs (hourly counter series, signals, prices, work orders, the baseline's meter and
  outdoor temperature). The only module that reads anything.
- :mod:`cloud.reports.content`: the report as frozen dataclasses of plain values.
- :mod:`cloud.reports.build`: inputs → report, pure (:mod:`cloud.energy` does the sums;
  eemeter fits the baselines); :mod:`cloud.reports.equipment` calls
  :mod:`cloud.energy.efficiency` and :mod:`cloud.energy.waste`.
- :mod:`cloud.reports.charts` (inline SVG) and :mod:`cloud.reports.render` (JSON, CSV,
  HTML from ``templates/report.html.j2``, PDF by WeasyPrint from the same HTML).
- :mod:`cloud.reports.models` (the ``reports`` and ``site_baselines`` tables) and
  :mod:`cloud.reports.service` (claim, generate and store; list and fetch with tenant
  isolation; the monthly schedule and its worker). No FastAPI here: ``cloud/api/reports.py``
  and ``cloud/cli.py`` (the commands ``report`` and ``reports``) call the service.
- :mod:`cloud.reports.baselines`: the fitted daily models kept per site when a report is
  made, and the dashboard's baseline source that predicts this month's expected use from
  them (cached per site and hour).
- :mod:`cloud.reports.errors`: :class:`~cloud.reports.errors.NoData`,
  :class:`~cloud.reports.errors.ReportBusy`, :class:`~cloud.reports.errors.ReportNotReady`,
  :class:`~cloud.reports.errors.BaselineUnavailable` (in :mod:`cloud.errors`' tree).
"""
