"""``edgewatch-demo``: the whole EdgeWatch system on one machine (:mod:`edgewatch_demo.run`).

Imports every other package: the simulator plays the fleet, the agents read it, the cloud
stores, scores, raises work orders and reports. Nothing imports this package.
"""
