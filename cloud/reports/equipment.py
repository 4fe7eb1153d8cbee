"""Equipment efficiency and fault waste: the report's calls of :mod:`cloud.energy.efficiency`
and :mod:`cloud.energy.waste`.

Inputs (:mod:`cloud.reports.collect`): a :class:`~cloud.energy.units.UnitHours` per
device over its site's month and a :class:`~cloud.energy.units.FaultEpisode` per work
order that overlaps it.

- every unit is assessed in its site's time zone
  (:func:`~cloud.energy.efficiency.assess_unit`) and all units are compared with their
  like units (:func:`~cloud.energy.efficiency.compare_like_units`);
- every unit with an episode gets its fault waste
  (:func:`~cloud.energy.waste.fault_waste`) against the site's hourly prices and grid
  factor, with the site's other units as like-unit candidates and, for units without
  an ``ambient_temp`` of their own, the site's outdoor temperature (the hourly mean of
  its units' ``ambient_temp``);
- the recommendations (:func:`~cloud.energy.waste.recommend`) use each site's mean price
  of the month (cost / kWh; the mean hourly price when nothing was used) and the work
  orders' fault catalogue for the remedies.

A site without a valid tariff is priced at 0 in ``XXX`` (no currency) by the collection;
the money figures of its records are set to None here, so that none reads as a saving of
nothing. Results enter the report as records (``dataclasses.asdict``-like, numpy values
made plain, NaN as None): the JSON and the CSV tables carry every field they have.

Input those modules refuse (:class:`~cloud.errors.InvalidInput`) makes the section say so
(status ``error``, logged) rather than fail the whole report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from cloud.energy.efficiency import UnitEfficiency, assess_unit, compare_like_units
from cloud.energy.units import F64, FaultEpisode
from cloud.energy.waste import FaultWaste, fault_waste, recommend
from cloud.errors import InvalidInput
from cloud.reports.collect import NO_TARIFF, Inputs, SiteData
from cloud.reports.content import EquipmentSection, Record

log = logging.getLogger(__name__)

HEADLINE_RECOMMENDATIONS: Final = 3
MONEY_FIELDS: Final = frozenset({"extra_cost", "annual_extra_cost", "saving_per_year", "currency"})
"""Fields set to None in the records of a site without a tariff."""


def plain(value: Any) -> Any:
    """``value`` as JSON-able plain values: dataclasses and mappings as dicts, sequences and
    arrays as lists, numpy scalars as Python numbers, NaN and infinities as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(result: Any, *, unpriced: bool = False) -> Record:
    """One result as a record (see the module docstring)."""
    out = plain(result)
    if not isinstance(out, dict):
        raise TypeError(f"expected a dataclass result, got {type(result).__name__}")
    if unpriced:
        out.update({k: None for k in MONEY_FIELDS if k in out})
    return out


def outdoor_temperature(site: SiteData) -> F64 | None:
    """The hourly mean of the site's units' ``ambient_temp`` (None when none reports it)."""
    series = [
        d.unit.signals["ambient_temp"] for d in site.devices if "ambient_temp" in d.unit.signals
    ]
    if not series:
        return None
    stack = np.vstack(series)
    present = np.isfinite(stack)
    counts = present.sum(axis=0)
    sums = np.where(present, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _mean_price(site: SiteData) -> float:
    kwh = np.array([d.energy.kwh for d in site.devices]) if site.devices else np.zeros((0, 0))
    total = float(np.nansum(kwh))
    if total > 0:
        return float(np.nansum(kwh * site.prices.prices[None, :])) / total
    return float(np.mean(site.prices.prices)) if site.prices.prices.size else 0.0


def _wastes(site: SiteData, episodes: Sequence[FaultEpisode]) -> list[FaultWaste]:
    if not episodes:
        return []
    units = [d.unit for d in site.devices]
    temperature = outdoor_temperature(site)
    with_orders = {e.device_id for e in episodes}
    out: list[FaultWaste] = []
    for unit in units:
        if unit.device_id in with_orders:
            out.extend(
                fault_waste(
                    unit,
                    episodes,
                    site.prices,
                    site.grid_factor,
                    timezone=site.timezone,
                    like_units=units,
                    outdoor_temp_c=temperature,
                )
            )
    return out


def assess(inputs: Inputs) -> EquipmentSection:
    """Efficiency per unit, like-unit groups, fault waste and recommendations."""
    episodes: dict[str, list[FaultEpisode]] = defaultdict(list)
    site_of = {d.info.id: s.id for s in inputs.sites for d in s.devices}
    for e in inputs.episodes:
        if e.device_id in site_of:
            episodes[site_of[e.device_id]].append(e)
    unpriced = {s.id for s in inputs.sites if s.tariff is None}
    try:
        assessed: list[UnitEfficiency] = [
            assess_unit(d.unit, timezone=s.timezone) for s in inputs.sites for d in s.devices
        ]
        groups = compare_like_units(assessed)
        wasted = [w for s in inputs.sites for w in _wastes(s, episodes[s.id])]
        advice = recommend(
            assessed,
            wasted,
            groups,
            mean_price={s.id: _mean_price(s) for s in inputs.sites},
            currency={s.id: (s.tariff or NO_TARIFF).currency for s in inputs.sites},
            catalogue=inputs.catalogue,
        )
    except InvalidInput as exc:
        log.error(
            "report %s of client %s: equipment section: %s", inputs.month, inputs.client_id, exc
        )
        return EquipmentSection(
            status="error", note=f"Equipment efficiency could not be assessed: {exc}."
        )
    waste_total = sum(w.extra_kwh for w in wasted if w.is_waste)
    return EquipmentSection(
        status="ok",
        note=(
            f"{len(assessed)} units assessed, {sum(1 for g in groups if g.comparable)} groups "
            f"of like units compared, {len(wasted)} fault episode(s) costed "
            f"({waste_total:,.0f} kWh wasted)."
        ),
        units=tuple(record(x) for x in assessed),
        like_unit_groups=tuple(record(x) for x in groups),
        fault_waste=tuple(record(x, unpriced=x.site_id in unpriced) for x in wasted),
        recommendations=tuple(record(x, unpriced=x.site_id in unpriced) for x in advice),
    )


def headlines(section: EquipmentSection) -> Sequence[str]:
    """The first recommendations as sentences for the report's highlights."""
    out = []
    for rec in section.recommendations[:HEADLINE_RECOMMENDATIONS]:
        action = rec.get("action")
        if not isinstance(action, str) or not action:
            continue
        money, currency = rec.get("saving_per_year"), rec.get("currency")
        kwh = rec.get("saving_kwh_per_year")
        worth = []
        if isinstance(money, int | float) and currency:
            worth.append(f"{currency} {money:,.0f}")
        if isinstance(kwh, int | float):
            worth.append(f"{kwh:,.0f} kWh")
        suffix = f" (saves about {' and '.join(worth)} a year)" if worth else ""
        out.append(f"Recommended: {action.rstrip('.')}{suffix}.")
    return out
