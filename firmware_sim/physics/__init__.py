"""Vectorised appliance physics: every function works on arrays of shape (steps, devices).

One implementation serves the live engine (small steps) and dataset mode (1-minute
steps). State updates use exact first-order lags (``exp(-dt/tau)``), so any step from
1 s to 10 min is stable. Only the thermostat (hysteresis) and the lags loop over time
steps; everything else is computed for a whole chunk at once.
"""
