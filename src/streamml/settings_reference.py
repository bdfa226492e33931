"""The settings described from their own classes: the reference page (``docs/configuration.md``, written
by ``streamml config --reference``; a test fails when the page is stale) and the effective settings of a
process with where each value came from (``streamml config``), secrets masked.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from streamml.settings import GROUPS, MLFLOW_URL_FILE, REDIS_URL_FILE, Group, Settings, env_names

SECRETS = frozenset({("gateway", "api_keys")})
"""Fields whose value is never shown (URLs have their password masked instead)."""
URLS = frozenset({("redis", "url"), ("mlflow", "tracking_uri")})
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@]*:)(?P<password>[^@]*)@", re.IGNORECASE)

HEADER = """# Configuration

Every process reads its settings from environment variables, one prefix per group. Only `REDIS_URL` and
`MLFLOW_TRACKING_URI` are read without it, as the rest of the ecosystem names them. Command-line flags
that mirror a setting say which variable in `--help`, and win over it. `streamml config` prints the
settings a process would run with and where each value comes from.

Lists and objects are JSON (`STREAMML_MLFLOW_ROUTES='{"churn": "models:/Churn@champion"}'`); booleans are
`true`/`false`. A variable renamed since the previous release is still read, with a warning naming its
successor, until the next release (the last column).

This page is generated from the settings classes (`streamml config --reference > docs/configuration.md`);
a test fails when it differs from them.
"""


def reference_markdown() -> str:
    """docs/configuration.md: every group, every variable with its type, default and docstring."""
    parts = [HEADER]
    for attribute, group in GROUPS.items():
        parts.append(f"\n## {_title(attribute, group)}\n\n{_doc(group)}\n")
        parts.append(
            "\n| variable | type | default | meaning | formerly |\n| --- | --- | --- | --- | --- |\n"
        )
        formerly = _formerly(group)
        for name, field in group.model_fields.items():
            variables = " or ".join(f"`{v}`" for v in env_names(group, name))
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
            old = ", ".join(f"`{v}`" for v in formerly.get(name, []))
            parts.append(f"| {variables} | {_type(field)} | {_default(field)} | {meaning} | {old} |\n")
    return "".join(parts)


@dataclass(frozen=True)
class Effective:
    """One setting as a process would run with it."""

    group: str
    field: str
    variable: str
    value: str
    source: str
    """``default``, ``environment (VAR)``, ``file (PATH)`` or ``flag (--name)``."""

    def as_dict(self) -> dict[str, str]:
        return {
            "group": self.group,
            "field": self.field,
            "variable": self.variable,
            "value": self.value,
            "source": self.source,
        }


def effective_settings(
    settings: Settings, environ: Mapping[str, str] | None = None, *, flags: Mapping[str, str] = {}
) -> list[Effective]:
    """Every setting's value and source. ``flags``: ``group.field`` -> the flag that set it."""
    environ = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    out = []
    for attribute, group in GROUPS.items():
        values: Group = getattr(settings, attribute)
        formerly = _formerly(group)
        for name in group.model_fields:
            variables = env_names(group, name)
            value: Any = getattr(values, name)
            source = "default"
            given = next((v for v in variables if v in environ), None)
            old = next((v for v in formerly.get(name, []) if v in environ), None)
            if f"{attribute}.{name}" in flags:
                source = f"flag ({flags[f'{attribute}.{name}']})"
            elif given is not None:
                source = f"environment ({given})"
            elif old is not None:
                source = f"environment ({old}, deprecated)"
            elif (attribute, name) in URLS and value is None:
                value, source = _recorded(settings, attribute)
            out.append(Effective(attribute, name, variables[0], _shown(attribute, name, value), source))
    return out


def _recorded(settings: Settings, attribute: str) -> tuple[str, str]:
    """An unset URL: the one `streamml up` recorded in the state dir, else the built-in default."""
    file = settings.state_dir / (REDIS_URL_FILE if attribute == "redis" else MLFLOW_URL_FILE)
    value = settings.redis_url() if attribute == "redis" else settings.tracking_uri()
    return value, f"file ({file})" if file.exists() else "default"


def _shown(attribute: str, name: str, value: Any) -> str:
    if (attribute, name) in SECRETS:
        return "" if value in (None, "") else "****"
    if value is None:
        return ""
    if isinstance(value, Path | Enum):
        value = str(value)
    text = value if isinstance(value, str) else json.dumps(value)
    if (attribute, name) in URLS:
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}****@", text)
    return text


def _formerly(group: type[Group]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for old, name in group.RENAMED.items():
        out.setdefault(name, []).append(old)
    return out


def _title(attribute: str, group: type[Group]) -> str:
    prefix = str(group.model_config.get("env_prefix", ""))
    name = {"mlflow": "MLflow"}.get(attribute, attribute.capitalize())
    return f"{name} (`{prefix}*`)"


def _doc(group: type[Group]) -> str:
    return " ".join((group.__doc__ or "").split())


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    return f"`{text}`".replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`".replace("|", "\\|")
