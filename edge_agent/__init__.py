"""EdgeWatch gateway agent.

This package is the bottom of the import graph: the contracts every other package
imports (device profiles, the register codec, later the wire protocol and features)
live here. It must stay light: no pandas, sklearn, FastAPI or SQL libraries.
"""

__version__ = "0.1.0"
