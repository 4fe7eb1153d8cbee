"""Energy-efficiency figures: the computational core of the monthly energy report.

Pure functions, no HTTP and no database; the report service queries the registry and the
time-series store and hands their results in.

- :mod:`cloud.energy.counters`: a device's energy-counter readings (the store's hourly
  :class:`~cloud.tsdb.base.EnergyInterval` rows) → hourly kWh with provenance per hour:
  wraps and resets, gaps spread (totals preserved) or left missing, implausible readings
  dropped and counted (:func:`~cloud.energy.counters.hourly_consumption`,
  :func:`~cloud.energy.counters.counter_spec` derives the wrap value from the profile).
- :mod:`cloud.energy.tariff`: the schema of ``Site.tariff`` (flat and time of use, with
  seasons) and its price at every hour in the site's local time, DST included
  (:func:`~cloud.energy.tariff.parse_tariff`, :func:`~cloud.energy.tariff.price_per_hour`,
  :func:`~cloud.energy.tariff.cost`).
- :mod:`cloud.energy.carbon`: kg CO2e from kWh and a validated grid factor per site or a
  default (:class:`~cloud.energy.carbon.GridFactors`, :func:`~cloud.energy.carbon.co2_kg`).
- :mod:`cloud.energy.summary`: totals per device, per asset type of a site and per site
  (kWh, cost by tariff period, CO2, share estimated) and energy use intensity
  (:func:`~cloud.energy.summary.summarise`).
- :mod:`cloud.energy.baseline`: weather-normalised CalTRACK baselines fitted by eemeter
  (daily degree-day or hourly model) with their ASHRAE Guideline 14 fit figures, and
  avoided energy use with Guideline 14's savings uncertainty
  (:func:`~cloud.energy.baseline.fit_baseline`, :func:`~cloud.energy.baseline.savings`;
  outdoor temperature from sensors or a weather CSV; :func:`~cloud.energy.baseline.warm_up`
  at start-up), and a stored daily model's prediction for local days
  (:func:`~cloud.energy.baseline.predict_daily`).
- :mod:`cloud.energy.efficiency` and :mod:`cloud.energy.waste`, over one unit's hours and
  work orders (:class:`~cloud.energy.units.UnitHours`,
  :class:`~cloud.energy.units.FaultEpisode`): runtime, duty cycle, starts per local day
  against a short-cycling limit, kWh per runtime hour and a compressor's COP/EER estimated
  from its temperature lift (:func:`~cloud.energy.efficiency.assess_unit`), like units
  across the client's sites (:func:`~cloud.energy.efficiency.compare_like_units`), the
  extra kWh, cost and CO2 of units running degraded under a work order against a healthy
  model of their own hours (:func:`~cloud.energy.waste.fault_waste`), and the top
  recommendations by money saved per year (:func:`~cloud.energy.waste.recommend`).

Bad input raises :class:`cloud.errors.InvalidInput` naming the value (for a tariff, its key
path: ``tariff.periods[1].start``).
"""
