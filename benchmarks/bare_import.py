"""The bare import: what a process pays to import Keras and TensorFlow the way tlcli does, and nothing else.

`tlcli.cli.import_keras` imports `keras` then `tensorflow` with `sklearn` and `matplotlib` hidden (Keras imports
them at start-up only for its scikit-learn wrappers and plotting helpers). This process does exactly that, without
importing tlcli (whose own modules are part of what a run costs), then exits. The speed benchmark
(`benchmarks/run.py`) times it as a whole process, like W1 and W3, and subtracts it from both.

Prints one JSON line: {"import_s" (in-process, around the two imports), "wall_time_s" (since the interpreter ran
this file), "modules_hidden"}.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

HIDDEN = ("sklearn", "matplotlib")  # tlcli.cli.KERAS_OPTIONAL_IMPORTS


def main() -> int:
    hidden = [name for name in HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError, as in tlcli.cli.import_keras
    began = time.perf_counter()
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": round(done - began, 3),
                "wall_time_s": round(done - STARTED, 3),
                "modules_hidden": hidden,
                "sklearn_loaded": "sklearn" in sys.modules,
                "matplotlib_loaded": "matplotlib" in sys.modules,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
