"""`train()` and friends leave the process as they found it: op determinism, precision policy, random states,
TensorFlow's registry of traced gradients (which kept every run's training graphs alive) and the default graph's
Python functions (which kept every run's datasets, and the arrays they read, alive)."""

from __future__ import annotations

import gc
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

pytestmark = pytest.mark.timeout(180)


def snapshot() -> dict:
    """What a caller of `train()` could notice afterwards (TensorFlow's seed through its next random number)."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # is_op_determinism_enabled has no public alias

    return {
        "determinism": tf_config.is_op_determinism_enabled(),
        "policy": keras.mixed_precision.global_policy().name,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "tensorflow": tf.random.uniform([4]).numpy().tolist(),
        "custom_gradients": custom_gradients(),
        "graph_functions": graph_functions(),
    }


def custom_gradients() -> set[str]:
    """The names `tf.custom_gradient` registered its traced gradient functions under, process-wide."""
    from tensorflow.python.framework import ops

    return {name for name in ops._gradient_registry._registry if name.startswith("CustomGradient-")}


def graph_functions() -> list[int]:
    """The Python functions (`Dataset.from_generator`'s among them) TensorFlow's default graph keeps alive."""
    import tensorflow as tf

    return [id(f) for f in getattr(tf.compat.v1.get_default_graph(), "_py_funcs_used_in_graph", [])]


def training_graphs() -> set[int]:
    """The traced graphs of Keras training steps still alive after a garbage collection."""
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, FuncGraph) and o.name.startswith("one_step_on")}


def same(before: dict, after: dict) -> None:
    assert after["determinism"] == before["determinism"]
    assert after["policy"] == before["policy"]
    assert after["python"] == before["python"]
    kind, keys, *position = before["numpy"]
    assert (
        after["numpy"][0] == kind and np.array_equal(after["numpy"][1], keys) and list(after["numpy"][2:]) == position
    )
    assert after["tensorflow"] == before["tensorflow"]
    assert after["custom_gradients"] == before["custom_gradients"]
    assert after["graph_functions"] == before["graph_functions"]


def seeded(seed: int) -> dict:
    """A snapshot with every generator seeded with `seed`; the generators are left at that point again."""
    import tensorflow as tf

    def seed_all() -> None:
        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)

    seed_all()
    found = snapshot()
    seed_all()  # the snapshot drew TensorFlow's next numbers
    return found


def test_train_leaves_determinism_precision_and_random_states_as_it_found_them(tmp_path):
    from tlcli import load_config, train

    data = make_image_folder(tmp_path / "images", {"a": 8, "b": 8})
    raw = tiny_config(data, tmp_path / "runs", runtime={"deterministic": True, "mixed_precision": "on"})
    before, graphs = seeded(11), training_graphs()
    result = train(load_config(raw))
    assert "mixed precision" in result.metrics.devices["description"]  # the run did change the settings
    same(before, snapshot())
    del result
    assert training_graphs() <= graphs  # nothing holds the run's training steps once its result is dropped


def test_the_guard_restores_after_an_error_too():
    import keras
    import tensorflow as tf

    from tlcli.global_state import restored_global_state

    before = seeded(5)
    with pytest.raises(RuntimeError), restored_global_state():
        keras.utils.set_random_seed(99)
        tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy("mixed_float16")
        random.random(), np.random.random()
        traced_training_step()
        generator_dataset()
        raise RuntimeError("training failed")
    same(before, snapshot())


def traced_training_step() -> None:
    """Trace one Keras training step, as a run does (its optimizer's all-reduce registers a custom gradient)."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0)


def generator_dataset() -> None:
    """Iterate a `Dataset.from_generator`, as a run's batches of large arrays do (it adds a function to the graph)."""
    import tensorflow as tf

    signature = tf.TensorSpec((2,), tf.float32)
    list(tf.data.Dataset.from_generator(lambda: iter([np.zeros(2, np.float32)]), output_signature=signature))


def test_a_trial_forgets_the_gradients_it_traced_and_the_dataset_functions_it_added():
    from tlcli.global_state import traced_graphs_released

    generator_dataset()  # the caller's own dataset, made before: it stays
    gradients, functions = custom_gradients(), graph_functions()
    with traced_graphs_released():
        traced_training_step()
        generator_dataset()
        assert custom_gradients() > gradients  # the step did register one: the test sees what it claims to
        assert len(graph_functions()) > len(functions)
    assert custom_gradients() == gradients
    assert graph_functions() == functions


def test_the_guard_loads_no_library():
    code = (
        "import sys\n"
        "from tlcli.global_state import restored_global_state\n"
        "loaded = set(sys.modules)\n"
        "with restored_global_state():\n"
        "    pass\n"
        "assert set(sys.modules) == loaded and 'tensorflow' not in loaded, set(sys.modules) - loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
