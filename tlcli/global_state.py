"""Process-global state a library call changes, put back when it returns: `restores_global_state`.

Training sets TensorFlow's op determinism (`runtime.deterministic`), Keras's global precision policy
(`runtime.mixed_precision`) and every random seed (Python's, NumPy's, TensorFlow's and Keras's, from `seed`).
`train`, `resume`, `tune` and `resume_tune` restore all of them as the caller had them, whether they return or
raise, so a notebook or a test that calls them twice, or trains and then does something else, inherits nothing.

Two settings are once per process and stay as the first call left them: which devices TensorFlow sees
(`runtime.device: cpu` hides the GPUs) and the split of the CPU into logical devices (`TLCLI_LOGICAL_CPUS`).
TensorFlow fixes both when it first initialises its devices; a caller who needs others starts a new process.

TensorFlow also registers a gradient function in a process-global registry for every `tf.custom_gradient` it traces
(tf.distribute's all-reduce in each Keras training step is one) and never removes it; the function holds the whole
traced graph, so each run or trial left about 24,000 objects alive for good and every later garbage collection got
slower. Likewise every `tf.data.Dataset.from_generator` adds its Python function to TensorFlow's global default
graph, which keeps it, and with it the arrays its generator reads (a run's decoded images), for the life of the
process. The calls forget what they added to either (`TracedGraphs`, `traced_graphs_released`), and only that: their
graphs are complete by then, and a dataset the caller made before stays whole.

Nothing here imports TensorFlow, Keras or NumPy: state of a library the process has not loaded is its default,
and it is reset to that default only if the call loaded the library.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

__all__ = ["GlobalState", "TracedGraphs", "restored_global_state", "restores_global_state", "traced_graphs_released"]

Function = TypeVar("Function", bound=Callable[..., Any])
# What `keras.utils.set_random_seed` sets besides the Python, NumPy and TensorFlow seeds (no public reader).
KERAS_SEED_ATTRIBUTES = ("global_random_seed", "global_seed_generator")
# The name `tf.custom_gradient` registers each traced gradient function under (tensorflow/python/ops/custom_gradient.py)
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


@dataclass(frozen=True)
class TracedGraphs:
    """What TensorFlow keeps for the life of the process once traced: the custom gradients registered by name and the
    Python functions of the default graph (by id), as found."""

    custom_gradients: frozenset[str] = frozenset()
    graph_functions: frozenset[int] = frozenset()

    @classmethod
    def capture(cls) -> TracedGraphs:
        return cls(custom_gradients=_custom_gradients(), graph_functions=_graph_functions())

    def release(self) -> None:
        """Forget what was added since the capture; what was there before is not ours to touch."""
        _forget_custom_gradients(self.custom_gradients)
        _forget_graph_functions(self.graph_functions)


@dataclass(frozen=True)
class GlobalState:
    """The process-global settings training changes, as found (None: that library was not loaded)."""

    python_random: Any
    numpy_random: Any = None
    op_determinism: bool = False
    precision_policy: Any = None
    tensorflow_seed: tuple[Any, Any, Any] | None = None
    keras_seed: tuple[Any, ...] | None = None
    traced: TracedGraphs = TracedGraphs()

    @classmethod
    def capture(cls) -> GlobalState:
        return cls(
            python_random=random.getstate(),
            numpy_random=sys.modules["numpy"].random.get_state() if "numpy.random" in sys.modules else None,
            op_determinism=_op_determinism() if "tensorflow" in sys.modules else False,
            precision_policy=_keras().mixed_precision.global_policy() if "keras" in sys.modules else None,
            tensorflow_seed=_tensorflow_seed() if "tensorflow" in sys.modules else None,
            keras_seed=_keras_seed() if "keras" in sys.modules else None,
            traced=TracedGraphs.capture(),
        )

    def restore(self) -> None:
        """Every setting back as captured; a library loaded since then back to its defaults."""
        random.setstate(self.python_random)
        if "numpy.random" in sys.modules:
            _restore_numpy(self.numpy_random)
        if "tensorflow" in sys.modules:
            _restore_determinism(self.op_determinism)
            _restore_tensorflow_seed(self.tensorflow_seed)
            self.traced.release()
        if "keras" in sys.modules:
            keras = _keras()
            keras.mixed_precision.set_global_policy(self.precision_policy or keras.backend.floatx())
            _restore_keras_seed(self.keras_seed)


@contextlib.contextmanager
def restored_global_state() -> Iterator[GlobalState]:
    """The block may change the settings of the module docstring; they are as before once it ends (or raises)."""
    state = GlobalState.capture()
    try:
        yield state
    finally:
        state.restore()


def restores_global_state(function: Function) -> Function:
    """`function` run inside `restored_global_state()` (its signature and docstring unchanged)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with restored_global_state():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def traced_graphs_released() -> Iterator[None]:
    """What TensorFlow keeps of the graphs the block traces is forgotten when it ends (the module docstring says why):
    for each trial of a study, which the study's own guard would only release at its end."""
    traced = TracedGraphs.capture()
    try:
        yield
    finally:
        traced.release()


def _keras():
    return sys.modules["keras"]


def _gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's registry of gradient functions by name (private: None when a TensorFlow lays it out otherwise)."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def _custom_gradients() -> frozenset[str]:
    registry = _gradient_registry()
    return frozenset(name for name in registry or () if name.startswith(CUSTOM_GRADIENT_PREFIX))


def _graph_py_functions() -> list[Any] | None:
    """The Python functions TensorFlow's default graph keeps alive (private: None when laid out otherwise)."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import ops

    functions = getattr(ops.get_default_graph(), "_py_funcs_used_in_graph", None)
    return functions if isinstance(functions, list) else None


def _graph_functions() -> frozenset[int]:
    return frozenset(id(function) for function in _graph_py_functions() or ())


def _forget_graph_functions(found: frozenset[int]) -> None:
    """Drop the default graph's Python functions added since `found` was read (in place: the graph holds the list)."""
    functions = _graph_py_functions()
    if functions is not None:
        functions[:] = [function for function in functions if id(function) in found]


def _forget_custom_gradients(found: frozenset[str]) -> None:
    """Drop the custom gradients registered since `found` was read; the other names are not ours to touch."""
    registry = _gradient_registry()
    for name in [n for n in registry or () if n.startswith(CUSTOM_GRADIENT_PREFIX) and n not in found]:
        registry.pop(name, None)


def _op_determinism() -> bool:
    from tensorflow.python.framework import config  # is_op_determinism_enabled has no public alias

    return bool(config.is_op_determinism_enabled())


def _restore_determinism(enabled: bool) -> None:
    from tensorflow.python.framework import config  # no public switch back

    if bool(config.is_op_determinism_enabled()) != enabled:
        config.enable_op_determinism() if enabled else config.disable_op_determinism()


def _restore_numpy(state: Any) -> None:
    if state is None:  # NumPy was loaded by the call: unseeded again, as a fresh process has it
        sys.modules["numpy"].random.seed(None)
    else:
        sys.modules["numpy"].random.set_state(state)


def _tensorflow_seed() -> tuple[Any, Any, Any]:
    """The eager context's global seed, and the generator of per-op seeds it derives from it (and its position)."""
    from tensorflow.python.eager import context

    current = context.context()
    generator = getattr(current, "_rng", None)
    return context.global_seed(), generator, generator.getstate() if generator is not None else None


def _restore_tensorflow_seed(found: tuple[Any, Any, Any] | None) -> None:
    from tensorflow.python.eager import context

    seed, generator, position = found or (None, None, None)
    current = context.context()
    if context.global_seed() != seed or getattr(current, "_rng", None) is not generator:
        context.set_global_seed(seed)  # clears TensorFlow's kernel cache: only when the seed was changed
        current._rng = generator
    if generator is not None:
        generator.setstate(position)


def _keras_seed() -> tuple[Any, ...] | None:
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout: its seed is left as training set it
        return None
    return tuple(global_state.get_global_attribute(name) for name in KERAS_SEED_ATTRIBUTES)


def _restore_keras_seed(found: tuple[Any, ...] | None) -> None:
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return
    for name, value in zip(KERAS_SEED_ATTRIBUTES, found or (None,) * len(KERAS_SEED_ATTRIBUTES)):
        global_state.set_global_attribute(name, value)
