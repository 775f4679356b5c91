"""The config's JSON Schema, for editors: generated from the pydantic schema, widened to what the loader accepts.

pydantic describes the values its validators end with; a few keys also take a shorthand that a before-validator
rewrites (`cache: off`, read by YAML 1.1 as `false`; `image_size: 224` for `[224, 224]`; `augment: light` for
`{preset: light}`). Those shorthands are added here, read from the same markers the schema uses, so the schema accepts
what `tlcli validate` accepts and rejects an unknown key (every section has `additionalProperties: false`).

`tlcli config-schema -o tlcli.schema.json` writes it; the repository keeps a copy at SCHEMA_FILE, which a test keeps
equal to what this module generates.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from tlcli.config.data_schema import AUGMENT_PRESETS, MAX_IMAGE_SIZE, AugmentConfig, DataConfig
from tlcli.config.fields import OFF_WORD, ON_OFF_WORDS, section_type
from tlcli.config.schema import ExperimentConfig

SCHEMA_FILE = "tlcli.schema.json"  # at the repository's root; configs/*.yaml point at it
DRAFT = "https://json-schema.org/draft/2020-12/schema"
OFF_AS_FALSE = {"const": False, "description": "an unquoted `off`, which YAML 1.1 reads as false"}
SWITCH_AS_BOOL = {"type": "boolean", "description": "an unquoted `on`/`off`, which YAML 1.1 reads as true/false"}
# Shorthands of single keys, rewritten by a field validator before pydantic checks the type.
SHORTHANDS: dict[tuple[type[BaseModel], str], dict[str, Any]] = {
    (DataConfig, "image_size"): {"type": "integer", "minimum": 1, "maximum": MAX_IMAGE_SIZE},
}
# Sections that also take one word (a model validator turns `augment: light` into `{preset: light}`).
SECTION_WORDS: dict[type[BaseModel], dict[str, Any]] = {AugmentConfig: {"enum": list(AUGMENT_PRESETS)}}


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an experiment config, as `tlcli validate` reads it."""
    schema = ExperimentConfig.model_json_schema()
    definitions = schema.get("$defs", {})
    for model in _sections(ExperimentConfig):
        properties = schema["properties"] if model is ExperimentConfig else definitions[model.__name__]["properties"]
        for name, field in model.model_fields.items():
            extra = _shorthand(model, name, field)
            if extra is not None:
                properties[name] = _widened(properties[name], extra)
    return {"$schema": DRAFT, "title": "tlcli experiment config", **schema}


def config_json_schema_text() -> str:
    """The schema as the committed file holds it: indented JSON, one final newline."""
    return json.dumps(config_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every section under it, each once."""
    found, pending = [], [model]
    while pending:
        current = pending.pop(0)
        if current in found:
            continue
        found.append(current)
        pending.extend(t for f in current.model_fields.values() if (t := section_type(f.annotation)) is not None)
    return found


def _shorthand(model: type[BaseModel], name: str, field) -> dict[str, Any] | None:
    """The extra form the loader accepts for one key, or None."""
    if OFF_WORD in field.metadata:
        return OFF_AS_FALSE
    if ON_OFF_WORDS in field.metadata:
        return SWITCH_AS_BOOL
    section = section_type(field.annotation)
    if section in SECTION_WORDS:
        return SECTION_WORDS[section]
    return SHORTHANDS.get((model, name))


def _widened(prop: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`prop` also accepting `extra`; its description, default and title stay at the top (editors show them)."""
    kept = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    forms = prop["anyOf"] if "anyOf" in prop else [{k: v for k, v in prop.items() if k not in kept}]
    return {**kept, "anyOf": [*forms, extra]}
