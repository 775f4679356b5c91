"""A package's public names loaded on first use (PEP 562), so that importing the package imports no stage it does
not use: the CLI must set TensorFlow's variables and start its report worker first, and `tlcli --help` stays quick."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, public: Mapping[str, tuple[str, ...]]) -> tuple[Callable, Callable]:
    """The `__getattr__` and `__dir__` of `package`, whose `public` maps each module to the names it exports."""
    home = {name: module for module, names in public.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # cached: the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *home})

    return __getattr__, __dir__
