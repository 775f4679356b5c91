"""Reading a config: YAML (safely), `--set` overrides by dotted path, validation, error text.

Any problem becomes a one-line `ConfigError` that names the key path, with a
did-you-mean for misspelled keys.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tlcli.config.fields import section_type
from tlcli.config.schema import ExperimentConfig, redact_uri
from tlcli.errors import ConfigError, did_you_mean


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Args:
        source: a YAML file path, or an already-parsed mapping.
        overrides: `key.path=value` strings; values are parsed as YAML
            (`3`, `0.5`, `[64, 64]`, `null`).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a
            value is invalid. The message names the key path.
    """
    raw = read_yaml(source) if not isinstance(source, dict) else copy.deepcopy(source)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    return validate_config(raw)


# A config is a few hundred values; YAML aliases can make a tiny file expand into
# gigabytes (a "billion laughs"), so the node graph is measured before it is built.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 100_000


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any):
        self.key, self.problem_mark = key, mark
        super().__init__(f"duplicate key {key!r}")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error, not last-one-wins."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise _DuplicateKey(key, key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML text safely: no Python objects, no duplicate keys, no alias bombs.

    Raises:
        ConfigError: naming `where` (a file or `--set`), the line, and the problem.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"{where}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB; a config is a few kilobytes")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_CONFIG_VALUES:
            raise ConfigError(
                "",
                (
                    f"{where}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases repeat whole "
                    "sections); refused, write the values out"
                ),
            )
        return loader.construct_document(node)
    except _DuplicateKey as exc:
        raise ConfigError(
            "", f"{where} line {exc.problem_mark.line + 1}: key {exc.key!r} is given twice; keep one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("", f"{where}{line}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values the node graph becomes once every alias is expanded (stops counting past the bound; a cycle is
    unbounded)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = min(MAX_CONFIG_VALUES + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        if id(node) in on_path:
            return MAX_CONFIG_VALUES + 1  # an alias inside its own anchor: endless
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                return MAX_CONFIG_VALUES + 1
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping (see `safe_yaml`).

    Raises:
        ConfigError: missing, not text, not valid or not a mapping, with the file named.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{path}: config file not found")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                "", f"{path}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB; a config is a few kilobytes"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not a text file") from None
    data = safe_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "", f"{path}: the config must be a mapping of keys (data:, base:, ...), got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=3` -> ("train.epochs", 3)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError("--set", f"expected KEY.PATH=VALUE, got {text!r}")
    if not value.strip():
        return key, ""
    try:
        return key, safe_yaml(value, f"--set {key}")
    except ConfigError as exc:
        if "expands to" in str(exc) or "given twice" in str(exc) or "larger than" in str(exc):
            raise
        return key, value  # not YAML: the text itself (the schema then says whether it fits)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: depth + 1]), f"is a value, not a section; cannot set {key}")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        key, message = describe_error(first)
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''}; run `tlcli validate` to list them)"
        err = ConfigError(key, message)
        err.all_problems = [": ".join(describe_error(e)) for e in exc.errors()]  # type: ignore[attr-defined]
        raise err from None


def config_problems(raw: dict[str, Any]) -> list[str]:
    """Every schema problem of a raw config, one line each (empty when valid)."""
    try:
        ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        return [": ".join(p for p in describe_error(e) if p) for e in exc.errors()]
    return []


def describe_error(error: dict[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (dotted key, human message)."""
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = did_you_mean(loc[-1], known)
        hint = f", did you mean {close}?" if close else f" (known keys: {', '.join(known)})"
        return key, f"unknown key{hint}"
    if kind == "missing":
        return key, "required key is missing"
    value = error.get("input")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif kind == "literal_error":
        message = "must be " + message.removeprefix("Input should be ")
    got = (
        f" (got {value!r})"
        if not isinstance(value, (dict, list)) and kind not in ("value_error", "assertion_error")
        else ""
    )
    return key, message[0].lower() + message[1:] + got


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member it tried into the location, e.g. 'literal[...]' or 'int'.
    return isinstance(part, str) and (
        part.startswith(("literal[", "function-", "tuple[", "dict[", "list["))
        or part in ("int", "str", "float", "bool", "nullable")
    )


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML, never with a tracking URI's password (it goes into run folders)."""
    data = config.to_dict()
    mlflow = data["tracking"]["mlflow"]
    if mlflow and mlflow.get("tracking_uri"):
        mlflow["tracking_uri"] = redact_uri(mlflow["tracking_uri"])
    return yaml.safe_dump(data, sort_keys=False)
