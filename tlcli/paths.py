"""Where tlcli and Keras keep what outlives a run: one definition of each root.

- `cache_root()`: tlcli's own cache (frozen features, screening verdicts),
  `$TLCLI_CACHE_DIR`, else `~/.cache/tlcli`.
- `keras_home()` / `keras_weights_dir()`: where Keras looks for downloaded
  weights, resolved the way Keras resolves it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tlcli.settings import KERAS_HOME, cache_dir


def cache_root() -> Path:
    """`$TLCLI_CACHE_DIR`, else `~/.cache/tlcli`."""
    configured = cache_dir()
    return Path(configured) if configured else Path.home() / ".cache" / "tlcli"


def keras_home() -> Path:
    """Keras's cache root. Keras reads KERAS_HOME once, when it is imported; once it is, ask it."""
    if "keras" in sys.modules:
        try:
            from keras.src.backend.config import keras_home as keras_own_home

            return Path(keras_own_home())
        except ImportError:
            pass
    home = KERAS_HOME.value()
    if home:
        return Path(home)
    base = Path.home() / ".keras"
    return base if os.access(base.parent, os.W_OK) else Path("/tmp/.keras")


def keras_weights_dir() -> Path:
    """`$KERAS_HOME/models/`: Keras looks there for `keras.applications` weights before downloading."""
    return keras_home() / "models"
