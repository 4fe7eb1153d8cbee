"""The web dashboard: server-rendered pages for facility managers and the service desk.

- Facility managers: their sites on one page (risk, open work orders, energy this month
  against the baseline), a page per site, and each device's life-cycle file (charts of
  its key signals and of its risk, alarms, work orders, repairs).
- The service desk (and admins): the work-order board (filter, sort by priority or SLA,
  transition, assign).

Sign-in uses the API's users, roles and tokens (a session cookie holding the API's bearer
token); tenant isolation is the registry's and the work orders' services'. Pages are
rendered on the server with Jinja2; charts are drawn by uPlot, served from the package
(``static/vendor``) like every other asset: a page makes no request to another host.

Modules: :mod:`~cloud.web.routes` (HTTP, templates, :func:`install`),
:mod:`~cloud.web.views` (what each page shows), :mod:`~cloud.web.charts` (chart data),
:mod:`~cloud.web.session` (cookies, CSRF), :mod:`~cloud.web.baseline` (where expected
energy comes from), :mod:`~cloud.web.formatting` (times in the site's zone, numbers).
"""

from __future__ import annotations

from cloud.web.baseline import BaselineSource, NoBaseline
from cloud.web.routes import install

__all__ = ["BaselineSource", "NoBaseline", "install"]
