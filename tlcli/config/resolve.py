"""Absolute paths in a resolved config, for every key the schema marks as a path.

A run's config.yaml must reproduce the run from any working directory (`--resume`,
`base.run`, `tlcli evaluate`), so every path in it is absolute. Which keys hold
paths is read from the schema (fields annotated with `PathKey`), so a new path
key is resolved without being listed anywhere.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tlcli.config.fields import PathKey, path_key, section_type
from tlcli.config.schema import ExperimentConfig


def path_keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> dict[str, PathKey]:
    """Every key that holds a path, dotted (`data.manifest`), with its marker: derived from the schema."""
    keys: dict[str, PathKey] = {}
    for name, field in model.model_fields.items():
        marker, section = path_key(field), section_type(field.annotation)
        if marker is not None:
            keys[f"{prefix}{name}"] = marker
        elif section is not None and typing.get_origin(field.annotation) is not list:
            keys |= path_keys(section, f"{prefix}{name}.")
    return keys


def resolve_paths(config: ExperimentConfig, runs_dir: Path, source_run: Path | None) -> ExperimentConfig:
    """The config with every path key absolute, so the saved config reproduces the run from any folder.

    Args:
        runs_dir: the runs folder in use (`output.runs_dir`, or what the caller overrides it with).
        source_run: the run folder `base.run` names, found by the caller (a run name is looked up in the runs folder).
    """
    return _absolute(config, "", {"output.runs_dir": runs_dir, "base.run": source_run})


def _absolute(section: Any, prefix: str, given: dict[str, Path | None]) -> Any:
    update: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        key, value, marker = f"{prefix}{name}", getattr(section, name), path_key(field)
        if marker is not None and value is not None:
            update[name] = _absolute_value(value, marker, given.get(key))
        elif marker is None and isinstance(value, BaseModel):
            update[name] = _absolute(value, f"{key}.", given)
    return section.model_copy(update=update) if update else section


def _absolute_value(value: str | Path, marker: PathKey, given: Path | None) -> str | Path:
    """`value` as an absolute path of its own type (str or Path); keywords, and names the caller did not resolve, as
    they are."""
    if given is None and (marker.named or value in marker.words):
        return value
    path = (given if given is not None else Path(value)).absolute()
    return str(path) if isinstance(value, str) else path
