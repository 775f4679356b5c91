"""The fine-tuning recipe's pieces (issue 26): the warmup + cosine schedule step by step, decoupled weight decay and
its exclusions, gradient clipping, the phase's own label smoothing and monitor, each key declared once."""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest
from conftest import tiny_config

from tlcli.config.loading import load_config
from tlcli.errors import ConfigError
from tlcli.training.callbacks import is_better
from tlcli.training.compile import Objective, make_optimizer
from tlcli.training.phases import AUTO_FINE_TUNE_EPOCHS, phases_of, resolve_auto
from tlcli.training.records import PhaseOutcome


def config_with(tmp_path, **fine_tune):
    raw = tiny_config(tmp_path / "data", tmp_path / "runs", base={"weights": "imagenet", "name": "MobileNetV2"})
    raw["fine_tune"] = fine_tune
    return raw


def fine_tune_phase(tmp_path, epochs=4, **fine_tune):
    config = load_config(config_with(tmp_path, epochs=epochs, **fine_tune))
    return config, phases_of(config)[1]


def rates(optimizer, steps: int) -> list[float]:
    """The learning rate the optimizer applies at each of its first `steps` steps."""
    out = []
    for step in range(steps):
        optimizer.iterations.assign(step)
        out.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return out


def test_fine_tune_warms_up_linearly_then_decays_by_a_cosine_step_by_step(tmp_path):
    _, phase = fine_tune_phase(tmp_path, epochs=4, learning_rate=1e-3, warmup_epochs=1)
    steps = 10  # per epoch: 10 warmup steps, then 30 of cosine
    lr = rates(make_optimizer(phase, steps), 41)
    np.testing.assert_allclose(lr[:11], [1e-3 * s / 10 for s in range(11)], rtol=1e-5, atol=1e-9)
    cosine = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 30)) for s in range(31)]
    np.testing.assert_allclose(lr[10:41], cosine, rtol=1e-4, atol=1e-9)
    assert lr[25] == pytest.approx(5e-4, rel=1e-4) and lr[40] == pytest.approx(0.0, abs=1e-9)


def test_a_constant_schedule_with_warmup_holds_its_peak_after_the_warmup(tmp_path):
    _, phase = fine_tune_phase(tmp_path, learning_rate=2e-3, warmup_epochs=0.5, schedule="constant")
    lr = rates(make_optimizer(phase, 8), 32)
    np.testing.assert_allclose(lr[:5], [0.0, 5e-4, 1e-3, 1.5e-3, 2e-3], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lr[4:], 2e-3, rtol=1e-6)


def test_the_train_phase_keeps_its_constant_rate(tmp_path):
    config = load_config(config_with(tmp_path))
    train = phases_of(config)[0]
    optimizer = make_optimizer(train, 10)
    assert rates(optimizer, 3) == pytest.approx([0.01] * 3) and optimizer.weight_decay is None


def tiny_model():
    inputs = keras.Input((3,))
    x = keras.layers.LayerNormalization(name="norm")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(x))


def test_decoupled_weight_decay_shrinks_kernels_only_never_biases_or_norm_scales(tmp_path):
    _, phase = fine_tune_phase(tmp_path, learning_rate=0.1, weight_decay=0.5, warmup_epochs=0, schedule="constant")
    model = tiny_model()
    for variable in model.trainable_variables:
        variable.assign(np.ones(variable.shape, "float32"))
    optimizer = make_optimizer(phase, 1, model.trainable_variables)
    assert optimizer.weight_decay == 0.5 and type(optimizer).__name__ == "AdamW"
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]  # Adam's step is 0: only decay acts
    optimizer.apply(zeros, model.trainable_variables)
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    np.testing.assert_allclose(after["dense/kernel"], 1 - 0.1 * 0.5)  # decoupled: w -= lr * wd * w
    for untouched in ("dense/bias", "norm/gamma", "norm/beta"):
        np.testing.assert_allclose(after[untouched], 1.0, err_msg=untouched)


def test_clipping_bounds_the_global_norm_of_the_gradients(tmp_path):
    _, phase = fine_tune_phase(
        tmp_path, optimizer="sgd", learning_rate=1.0, clipnorm=1.0, weight_decay=None, warmup_epochs=0
    )
    variable = keras.Variable(np.zeros(4, "float32"))
    optimizer = make_optimizer(phase, 100, [variable])
    optimizer.apply([np.full(4, 10.0, "float32")], [variable])
    moved = keras.ops.convert_to_numpy(variable)
    assert float(np.linalg.norm(moved)) == pytest.approx(1.0, rel=1e-5)  # SGD moved by the clipped gradient


def stepped(optimizer, model) -> dict[str, np.ndarray]:
    """How far one step with gradients of ones moves each variable of `model` (its variables start at zero)."""
    for variable in model.trainable_variables:
        variable.assign(np.zeros(variable.shape, "float32"))
    optimizer.apply([np.ones(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_discriminative_rates_scale_each_variable_s_step_by_its_factor_alone(tmp_path, optimizer):
    _, phase = fine_tune_phase(
        tmp_path, optimizer=optimizer, learning_rate=0.1, warmup_epochs=0, schedule="constant", clipnorm=None
    )
    plain = stepped(make_optimizer(phase, 1), tiny_model())
    model = tiny_model()
    scaled = stepped(make_optimizer(phase, 1, model.trainable_variables, rates={"dense/kernel": 0.25}), model)
    np.testing.assert_allclose(scaled["dense/kernel"], 0.25 * plain["dense/kernel"], rtol=1e-6)
    assert np.abs(plain["dense/kernel"]).min() > 0.05  # the premise: the plain step moved it
    for path in ("dense/bias", "norm/gamma", "norm/beta"):
        np.testing.assert_allclose(scaled[path], plain[path], rtol=1e-6, err_msg=path)


def test_discriminative_rates_scale_the_decoupled_weight_decay_too(tmp_path):
    _, phase = fine_tune_phase(tmp_path, learning_rate=0.1, weight_decay=0.5, warmup_epochs=0, schedule="constant")
    model = tiny_model()
    for variable in model.trainable_variables:
        variable.assign(np.ones(variable.shape, "float32"))
    optimizer = make_optimizer(phase, 1, model.trainable_variables, rates={"dense/kernel": 0.25, "dense/bias": 0.25})
    optimizer.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    np.testing.assert_allclose(after["dense/kernel"], 1 - 0.1 * 0.25 * 0.5, rtol=1e-6)  # once, at its own rate
    np.testing.assert_allclose(after["dense/bias"], 1.0)  # still never a bias


def test_depth_factors_fall_geometrically_from_the_top_trainable_layer_to_the_bottom_ratio():
    from tlcli.modeling import layers as names
    from tlcli.modeling.freezing import depth_rate_factors

    inputs = keras.Input((4,))
    x = inputs
    for i in range(4):
        x = keras.layers.Dense(4, name=f"d{i}")(x)
    base = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x), name=names.BASE)
    outer = keras.Input((4,))
    model = keras.Model(outer, keras.layers.Dense(2, name="head")(base(outer)))
    base.get_layer("d0").trainable = base.get_layer("bn").trainable = False  # frozen: not in the ladder
    factors = depth_rate_factors(model, 0.01)
    assert factors == pytest.approx(
        {"d1/kernel": 0.01, "d1/bias": 0.01, "d2/kernel": 0.1, "d2/bias": 0.1, "d3/kernel": 1.0, "d3/bias": 1.0}
    )
    assert depth_rate_factors(model, 1.0) == {}  # one rate everywhere: nothing to scale


@pytest.mark.slow
def test_a_tiny_bottom_ratio_keeps_the_lowest_trainable_layer_where_it_was_while_the_top_trains(
    tmp_path, frozen_source
):
    from tlcli import train

    data, source, _ = frozen_source
    base = keras.models.load_model(source / "model.keras").get_layer("base")
    kernels = {layer.name: layer.get_weights()[0] for layer in base.layers if hasattr(layer, "kernel")}
    bottom, top = next(iter(kernels)), list(kernels)[-1]

    def moved(**fine_tune) -> dict[str, float]:
        raw = tiny_config(data, tmp_path / "runs", base={"run": str(source), "trainable": "none"})
        raw["fine_tune"] = {
            "unfreeze": "all",
            "epochs": 1,
            "optimizer": "sgd",
            "learning_rate": 0.05,
            "when": "always",
            **fine_tune,
        }
        trained = keras.models.load_model(train(load_config(raw)).run_dir / "model.keras").get_layer("base")
        return {
            name: float(np.abs(trained.get_layer(name).get_weights()[0] - kernels[name]).mean())
            for name in (bottom, top)
        }

    plain, ladder = moved(), moved(bottom_lr_ratio=1e-3)
    assert plain[bottom] > 0 and ladder[bottom] == pytest.approx(1e-3 * plain[bottom], rel=0.25)  # its factor
    assert 0.3 < ladder[top] / plain[top] < 3  # the top layer learns at the full rate in both


@pytest.mark.parametrize(
    ("fine_tune", "key"),
    [
        ({"weight_decay": 0.05, "optimizer_args": {"weight_decay": 0.01}}, "weight_decay"),
        ({"clipnorm": 2.0, "optimizer_args": {"global_clipnorm": 1.0}}, "clipnorm"),
        ({"warmup_epochs": 2, "schedule_args": {"warmup_steps": 10}}, "warmup_epochs"),
        ({"ema_epochs": 1, "optimizer_args": {"use_ema": True}}, "ema_epochs"),
    ],
)
def test_a_recipe_key_and_an_argument_for_the_same_thing_are_a_config_error(tmp_path, fine_tune, key):
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, **fine_tune))
    assert "fine_tune" in str(caught.value) and key in str(caught.value) and "keep one" in str(caught.value)


def test_an_argument_alone_wins_over_the_recipe_default(tmp_path):
    _, phase = fine_tune_phase(tmp_path, optimizer_args={"weight_decay": 0.2})
    assert make_optimizer(phase, 10, []).weight_decay == pytest.approx(0.2)


def test_ema_epochs_is_a_keras_moving_average_over_that_many_epochs_of_steps(tmp_path):
    _, phase = fine_tune_phase(tmp_path, ema_epochs=2)
    optimizer = make_optimizer(phase, 10, [])
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(1 - 1 / 20)
    assert not make_optimizer(fine_tune_phase(tmp_path)[1], 10, []).use_ema


@pytest.mark.slow
def test_the_moving_average_is_kept_when_it_validates_better_and_training_continues_from_the_weights(
    tmp_path, frozen_source
):
    """At a rate that makes the second epoch's weights erratic, their moving average validates better: it is the
    phase's best (and the saved model), while training and the checkpoint continue from the weights themselves."""
    import csv

    from tlcli import train

    data = frozen_source[0]
    raw = tiny_config(data, tmp_path / "runs", cache="off", train={"learning_rate": 0.05, "ema_epochs": 1.0})
    result = train(load_config(raw))
    rows = list(csv.DictReader(open(result.run_dir / "history.csv", encoding="utf-8")))
    assert all(row["ema_val_accuracy"] and row["ema_val_loss"] for row in rows)
    best = result.metrics.phases["train"]["best"]
    assert best["averaged"] is True and best["epoch"] == 2
    assert best["val_accuracy"] == pytest.approx(float(rows[1]["ema_val_accuracy"]))
    assert float(rows[1]["ema_val_accuracy"]) > float(rows[1]["val_accuracy"])  # the premise
    assert result.metrics.final["val_loss"] == pytest.approx(best["val_loss"], abs=1e-5)  # the model saved is it
    checkpoint = result.run_dir / "checkpoints" / "epoch-0002"
    saved = keras.models.load_model(result.run_dir / "model.keras").get_weights()
    with np.load(checkpoint / "best.weights.npz") as averaged, np.load(checkpoint / "model.weights.npz") as last:
        for i, weight in enumerate(saved):
            np.testing.assert_allclose(averaged[f"arr_{i}"], weight, atol=1e-6)
        assert any(not np.allclose(last[f"arr_{i}"], averaged[f"arr_{i}"]) for i in range(len(saved)))


def test_a_time_budget_sizes_auto_epochs_between_one_and_max_epochs(tmp_path):
    from tlcli.training.budget import epochs_within, time_training_step

    assert epochs_within(3, 50.0, 30) == 3 and epochs_within(0.1, 50.0, 30) == 1 and epochs_within(60, 5.0, 30) == 30
    _, phase = fine_tune_phase(tmp_path, epochs="auto", budget_min=2.5)
    assert phase.budget_min == 2.5 and phase.epochs == 30  # sized when the phase starts, at most max_epochs
    with pytest.raises(ConfigError, match="budget_min") as caught:
        load_config(config_with(tmp_path, epochs=4, budget_min=2))
    assert "fine_tune" in str(caught.value) and "epochs: auto" in str(caught.value)
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    assert time_training_step(model, 4) > 0  # timed, and the weights untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_fine_tuning_has_its_own_label_smoothing_and_monitor(tmp_path):
    config, phase = fine_tune_phase(tmp_path)
    assert config.train.label_smoothing == 0 and phase.label_smoothing == 0.1
    assert phase.monitor == "val_accuracy" and phase.tie_break == "val_loss"
    objective = Objective(config, 2)
    assert objective.loss().label_smoothing == 0 and objective.for_phase(phase).loss().label_smoothing == 0.1


def test_fine_tune_auto_epochs_run_the_whole_schedule(tmp_path):
    config = load_config(config_with(tmp_path))
    phase, why = resolve_auto(phases_of(config)[1], on_features=False)
    assert phase.epochs == AUTO_FINE_TUNE_EPOCHS and phase.early_stopping.patience is None and "cosine" in why


def test_accuracy_ties_are_broken_by_the_lower_validation_loss():
    start = {"val_accuracy": 0.9, "val_loss": 0.30}
    assert is_better({"val_accuracy": 0.9, "val_loss": 0.25}, start, "val_accuracy", "val_loss")
    assert not is_better({"val_accuracy": 0.9, "val_loss": 0.35}, start, "val_accuracy", "val_loss")
    assert not is_better({"val_accuracy": 0.9, "val_loss": 0.25}, start, "val_accuracy")  # no tie-break: no gain
    assert is_better({"val_accuracy": 0.92, "val_loss": 0.50}, start, "val_accuracy", "val_loss")


def test_the_outcome_says_which_weights_were_kept_and_by_how_much():
    start = {"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.3}
    kept = PhaseOutcome(start, {"epoch": 7, "val_accuracy": 0.93, "val_loss": 0.4}, "best", "val_accuracy")
    assert kept.verdict == (
        "kept its best epoch, 7 (val_accuracy 0.9000 at its start, 0.9300 at its best epoch (+0.0300))"
    )
    assert kept.to_dict()["decided_by"] == "val_accuracy" and kept.added_epochs == 4
    rolled = PhaseOutcome(start, {"epoch": 5, "val_accuracy": 0.85}, "start", "val_accuracy")
    assert rolled.verdict.startswith("no better on validation than it started") and "-0.0500" in rolled.verdict


def test_micro_batches_with_accumulated_gradients_train_the_model_whole_batches_train(tmp_path, split_folder):
    """48 training images, batch 8: micro-batches of 4 (two per update) give the model batches of 8 give."""
    from tlcli import train

    def run(name, **data):
        raw = tiny_config(
            split_folder,
            tmp_path / "runs",
            name=name,
            cache="off",
            data={"batch_size": 8, **data},
            base={"args": {"filters": 4, "blocks": 2, "batch_norm": False}},  # batch statistics differ by size
            head={"dropout": 0.0},
        )
        return train(load_config(raw))

    whole, micro = run("whole"), run("micro", micro_batch=4)
    x = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    models = [keras.models.load_model(r.run_dir / "model.keras") for r in (whole, micro)]
    assert models[1].optimizer.gradient_accumulation_steps == 2 and not models[0].optimizer.gradient_accumulation_steps
    outputs = [model.predict(x, verbose=0) for model in models]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    assert micro.metrics.final["val_loss"] == pytest.approx(whole.metrics.final["val_loss"], abs=1e-5)


def test_a_micro_batch_that_does_not_divide_the_batch_is_a_config_error(tmp_path):
    raw = tiny_config(tmp_path / "data", tmp_path / "runs", data={"batch_size": 8, "micro_batch": 3})
    with pytest.raises(ConfigError, match="micro_batch"):
        load_config(raw)


def test_fine_tuning_is_skipped_when_the_head_leaves_nothing_to_gain_on_validation(frozen_source, tmp_path):
    """`when: auto` skips the phase when the head is already perfect on validation (this data's separable features);
    `always` runs it."""
    from tlcli import train

    data, source, _ = frozen_source

    def run(when):
        raw = tiny_config(data, tmp_path / "runs", name=when, train={"epochs": 4, "learning_rate": 0.05})
        raw["base"] = {"run": str(source), "trainable": "none"}
        raw["fine_tune"] = {"unfreeze": 2, "epochs": 2, "when": when}
        return train(load_config(raw))

    always = run("always")
    start = always.metrics.phases["fine_tune"]["start"]
    assert start["val_accuracy"] == pytest.approx(1.0)  # the premise: a perfect head on validation
    assert "skipped" not in always.metrics.phases["fine_tune"] and always.metrics.epochs["total"] == 6
    auto = run("auto")
    outcome = auto.metrics.phases["fine_tune"]
    assert outcome["kept"] == "start" and "val_accuracy is already 1.0000" in outcome["skipped"]
    assert auto.metrics.epochs["total"] == 4 and outcome["verdict"].startswith("skipped:")


def test_auto_skips_fine_tuning_when_the_head_misses_too_few_images_for_a_gain_to_be_shown():
    """`when: auto` skips when even fixing every validation error could not pass a one-sided sign test at 5% (fewer
    than 5 errors); with 5 or more, an unperfect accuracy of another kind, or a loss, it runs."""
    from tlcli.training.loop import SIGN_TEST_ERRORS, skip_reason

    assert SIGN_TEST_ERRORS == 5 and 0.5**5 < 0.05 <= 0.5**4  # the premise, checked
    cats = skip_reason({"val_accuracy": 392 / 396, "val_loss": 0.05}, "val_accuracy", 396)  # the measured case
    assert "misses 4 of 396 validation images" in cats and "`always` runs it" in cats
    assert skip_reason({"val_accuracy": 391 / 396}, "val_accuracy", 396) == ""  # 5 errors: fine-tuning may show it
    assert skip_reason({"val_accuracy": 0.5}, "val_accuracy", 8) != ""  # 4 errors of 8: nothing could be shown
    assert "already 1.0000" in skip_reason({"val_map": 1.0}, "val_map", 10)
    assert skip_reason({"val_map": 0.99}, "val_map", 1000) == ""  # not a count of images: only a perfect one skips
    assert skip_reason({"val_loss": 0.0}, "val_loss", 10) == "" and skip_reason({}, "val_accuracy", 10) == ""


def test_a_kept_fine_tuning_phase_gives_the_unknown_rule_the_fine_tuned_features(tmp_path):
    """Pooled features computed before fine-tuning (the probe's, the data audit's) are reused until a phase keeps
    weights it trained in the base, then computed again: every training image's features, as the saved model computes
    them, are in the rule's bank, which differs from the bank of the same run without fine-tuning."""
    import csv

    from conftest import make_image_folder

    from tlcli import train
    from tlcli.inference.predict import decode_stream, run_source
    from tlcli.inference.unknown import FeatureBank

    data = tmp_path / "data"
    make_image_folder(data / "train", {"a": 24, "b": 24, "c": 24}, seed=1)

    def run(name, **fine_tune):
        raw = tiny_config(data, tmp_path / "runs", name=name, train={"epochs": 1, "learning_rate": 0.001})
        raw["base"] = {**raw["base"], "trainable": "none"}
        if fine_tune:
            raw["fine_tune"] = fine_tune
        return train(load_config(raw))

    head = run("head")
    tuned = run("tuned", unfreeze="all", epochs=3, learning_rate=0.01, warmup_epochs=0, when="always")
    assert tuned.metrics.phases["fine_tune"]["kept"] == "best"  # the premise: the phase changed the base
    bank = FeatureBank.load(tuned.run_dir / "unknown_features.npz").features
    before = FeatureBank.load(head.run_dir / "unknown_features.npz").features
    assert bank.shape == before.shape and not np.allclose(bank, before, atol=1e-2)
    source = run_source(tuned.run_dir)
    with open(tuned.run_dir / "splits" / "train.csv") as stream:
        paths = [row["path"] for row in csv.DictReader(stream)]
    images = np.stack([pixels for _, pixels in decode_stream(paths, source.image_size, source.channels, None, 8)])
    features = np.asarray(source.outputs(images, 16), dtype=np.float32)[:, -bank.shape[1] :]  # [logits | features]
    features = features / np.linalg.norm(features, axis=1, keepdims=True)  # the bank holds unit vectors
    nearest = np.linalg.norm(features[:, None, :] - bank[None, :, :], axis=-1).min(axis=1)
    assert nearest.max() < 1e-2  # float16 storage, nothing more
    stale = np.linalg.norm(features[:, None, :] - before[None, :, :], axis=-1).min(axis=1)
    assert stale.max() > 0.1  # what the rule would compare with had the features not been computed again


def test_a_later_phase_must_gain_more_than_one_validation_image_to_be_kept():
    from tlcli.training.loop import _beats_its_start
    from tlcli.training.phases import Phase

    phase = Phase("fine_tune", 8, 3e-4, None, 80, "fine_tune.unfreeze", None, monitor="val_accuracy")
    start = {"epoch": 3, "val_accuracy": 44 / 47, "val_loss": 0.2}
    one_more, two_more = {"val_accuracy": 45 / 47}, {"val_accuracy": 46 / 47}
    needed = 1.5 / 47  # what the fit loop asks of a fine-tuning phase on 47 validation images
    assert not _beats_its_start(phase, one_more, start, needed) and _beats_its_start(phase, two_more, start, needed)
    rolled = PhaseOutcome(start, {"epoch": 6, **one_more}, "start", "val_accuracy", needed=needed)
    assert rolled.verdict.startswith("gained no more than one validation image") and "needed more than" in (
        rolled.verdict
    )
    assert rolled.to_dict()["needed_gain"] == pytest.approx(needed, abs=1e-6)


def test_without_restore_best_the_phase_is_judged_and_reported_by_the_last_epoch_it_ends_with():
    start = {"epoch": 10, "val_accuracy": 0.955}
    best, last = {"epoch": 14, "val_accuracy": 0.963}, {"epoch": 15, "val_accuracy": 0.959}  # W2's measured case
    kept = PhaseOutcome(start, best, "last", "val_accuracy", last=last)
    assert kept.verdict == (
        "kept its last epoch, 15 (train.restore_best: false) "
        "(val_accuracy 0.9550 at its start, 0.9590 at its last epoch (+0.0040))"
    )
    assert kept.added_epochs == 5 and kept.to_dict()["last"] == last and kept.to_dict()["best"] == best


def test_a_phase_without_restore_best_compares_its_last_epoch_with_its_start_and_ends_with_it(tmp_path):
    """`train.restore_best: false` ends a phase with its last epoch's weights: that epoch (not the best) is what must
    beat the phase's start, and what metrics.json and the final figures report."""
    from conftest import make_image_folder

    from tlcli import train

    data = tmp_path / "data"
    make_image_folder(data / "train", {"a": 24, "b": 24, "c": 24}, seed=1)
    raw = tiny_config(data, tmp_path / "runs", train={"epochs": 1, "learning_rate": 0.001, "restore_best": False})
    raw["base"] = {**raw["base"], "trainable": "none"}
    raw["fine_tune"] = {"unfreeze": "all", "epochs": 3, "learning_rate": 0.01, "warmup_epochs": 0, "when": "always"}
    result = train(load_config(raw))
    outcome = result.metrics.phases["fine_tune"]
    with open(result.run_dir / "history.csv") as stream:
        rows = [row for row in csv.DictReader(stream) if row["phase"] == "fine_tune"]
    assert outcome["last"]["epoch"] == int(rows[-1]["epoch"]) == 4
    assert outcome["last"]["val_accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]), abs=1e-6)
    ended = outcome["last"] if outcome["kept"] == "last" else outcome["start"]
    assert outcome["kept"] in ("last", "start") and "at its last epoch" in outcome["verdict"]
    assert result.metrics.final["val_accuracy"] == pytest.approx(ended["val_accuracy"], abs=1e-6)
