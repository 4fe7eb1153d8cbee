"""The agent must stay light: its modules may not pull heavy libraries in at import time."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import edge_agent

HEAVY = ["pandas", "sklearn", "tsfresh", "fastapi", "sqlalchemy", "psycopg", "torch", "scipy"]


def test_importing_every_agent_module_loads_no_heavy_library() -> None:
    modules = [m.name for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")]
    assert "edge_agent.registers" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy libraries imported by edge_agent: {out.stdout}"
