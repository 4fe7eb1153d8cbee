"""Reading the YAML files users write (profiles, fleets, gateway configs).

One way to read them and one way to report what is wrong: every error names the
file, the key as a readable path (``clients[0](acme).sites[1](mall-2).kind``, with
the ``id`` of list items where they have one) and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edge_agent.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, error: type[ConfigError]) -> Any:
    """Parse a YAML file; an unreadable or malformed file raises ``error``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(path), "", f"cannot read the file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise error(str(path), where, f"not valid YAML: {exc}") from None


def key_path(loc: tuple[int | str, ...], data: Any) -> str:
    """A pydantic error location as a key path, naming list items by their ``id``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, str) and part.startswith(("function-", "literal[")):
            continue  # validator frames, not keys of the file
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            out += f"[{part}]" + (f"({ident})" if ident else "")
            node = item
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def validate_document(
    model: type[M], data: Any, source: str, error: type[ConfigError], schema_version: int
) -> M:
    """Check the top level and ``schema_version``, then validate ``data`` as ``model``."""
    _check_mapping(data, source, error)
    version = data.get("schema_version")
    if version != schema_version:
        raise error(
            source,
            "schema_version",
            f"expected {schema_version}, got {version!r}; this EdgeWatch reads schema "
            f"version {schema_version}",
        )
    return validate_mapping(model, data, source, error)


def validate_mapping(model: type[M], data: Any, source: str, error: type[ConfigError]) -> M:
    """Validate a mapping as ``model``; the first problem raises ``error`` with its key path."""
    _check_mapping(data, source, error)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        why = str(err["msg"]).removeprefix("Value error, ")
        raise error(source, key_path(tuple(err["loc"]), data), why) from None


def _check_mapping(data: Any, source: str, error: type[ConfigError]) -> None:
    if not isinstance(data, dict):
        got = type(data).__name__
        raise error(source, "", f"expected a mapping at the top level, got {got}")
