"""The one definition of tlcli's version (the package root re-exports it), and the versions `tlcli --version` prints.

`versions()` reads the installed packages' metadata (`importlib.metadata`): it never imports TensorFlow or Keras, so
`tlcli --version` answers at once. What needs TensorFlow loaded (its devices) is `tlcli env`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib import metadata

__version__ = "0.1.0"

# The distributions that provide `import tensorflow`, in the order they are looked for.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly")


@dataclass(frozen=True)
class Versions:
    """The versions of tlcli, Python, TensorFlow and Keras (None: not installed)."""

    tlcli: str
    python: str
    tensorflow: str | None
    keras: str | None

    def describe(self) -> str:
        """`tlcli 0.1.0 (Python 3.11.9, TensorFlow 2.18.0, Keras 3.8.0)`."""
        parts = [f"Python {self.python}", f"TensorFlow {self.tensorflow or 'not installed'}"]
        parts.append(f"Keras {self.keras or 'not installed'}")
        return f"tlcli {self.tlcli} ({', '.join(parts)})"

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def versions() -> Versions:
    """The installed versions, from package metadata (no import of TensorFlow or Keras)."""
    return Versions(
        tlcli=__version__,
        python=platform.python_version(),
        tensorflow=_installed(*TENSORFLOW_DISTRIBUTIONS),
        keras=_installed("keras"),
    )


def _installed(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
