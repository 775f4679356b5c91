"""The README's config reference, generated from the schema (`tlcli config-reference`)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tlcli.config.loading import section_type
from tlcli.config.schema import ExperimentConfig


def reference_rows(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every key, depth first: the README table."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = section_type(field.annotation)
        if section is not None and typing.get_origin(field.annotation) is not list:
            default = "absent" if field.default is None and not field.is_required() else ""
            rows.append((key, default, field.description or ""))
            rows.extend(reference_rows(section, f"{key}."))
            continue
        if section is not None:  # a list of sections, e.g. head.dense
            rows.append((key, "[]", field.description or ""))
            rows.extend(reference_rows(section, f"{key}[]."))
            continue
        rows.append((key, _format_default(field), field.description or ""))
    return rows


def _format_default(field: Any) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, Path):
        default = str(default)
    return (
        "null"
        if default is None
        else yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
    )


def reference_markdown() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, description in reference_rows():
        lines.append(f"| `{key}` | {f'`{default}`' if default else ''} | {description} |")
    return "\n".join(lines) + "\n"
