"""What each phase fits: the full model on decoded images, or its trainable part on features.

Training's single pass over the files leaves either decoded images
(`ImageInputs`) or the frozen part's features at the extraction cut
(`FeatureInputs`); both give a phase its model, data and validation the same
way, and derive the features of any other cut from what they hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.augment import batch_augmenter, check_batch_augment
from tlcli.data.batches import ArrayBatches, encode_targets, make_dataset, steps_per_epoch
from tlcli.data.decoded import DecodedImages, ScreenedSplit
from tlcli.errors import ConfigError
from tlcli.features.cut import Cut, across_replicas, bridge, extractor_for, flip_pixels, run_in_batches, trainable_part
from tlcli.features.extract import FeatureSet
from tlcli.inference.probabilities import to_class_probabilities
from tlcli.modeling import layers as names
from tlcli.training.compile import Objective, mean_loss
from tlcli.training.fit_in_memory import FIT_IN_MEMORY_MAX_BYTES
from tlcli.training.phases import PhasePlan, flip_mode
from tlcli.training.records import Splits


class PhaseInputs:
    """The splits as training's pass left them, and the features each cut needs (computed once per cut)."""

    splits: Splits[ScreenedSplit]

    def __init__(self, model, config: ExperimentConfig, num_classes: int):
        self.model, self.config, self.num_classes = model, config, num_classes
        self.binary = config.head.activation == "sigmoid" and not config.multi_label  # one sigmoid unit for two classes
        self._features: dict[tuple[str, str, bool], np.ndarray] = {}
        self._parts: dict[str, Any] = {}  # inference through the trainable part, one model per cut (no retracing)
        # Phases on features with augmentation on are the ones the plan allowed: flips only.
        self.flip = flip_mode(config)

    def features(self, cut: Cut, split: str, flipped: bool = False) -> np.ndarray:
        """The features of `split` at `cut`; `flipped`: of the images' flipped copies (see `flip_mode`).

        Computed once per cut with the base's weights, until `base_changed` says they moved.
        """
        key = (cut.label, split, flipped)
        if key not in self._features:
            self._features[key] = self._compute(cut, split, flipped)
        return self._features[key]

    def base_changed(self) -> None:
        """A later phase kept weights it trained in the base: every feature computed so far may be stale (the pooled
        features of the probe, the data audit, the unknown-image rule and the refit are computed again, once)."""
        self._features.clear()

    def _compute(self, cut: Cut, split: str, flipped: bool) -> np.ndarray:
        raise NotImplementedError

    def image_dataset(self, split: str, shuffle: bool, first_epoch: int = 0, augment=None):
        raise NotImplementedError(f"{type(self).__name__} holds no decoded images")

    def arrays(self, cut: Cut, split: str, shuffle: bool, first_epoch: int = 0) -> ArrayBatches:
        """The features of `split` at `cut` and how they are batched."""
        config = self.config
        return ArrayBatches(
            self.features(cut, split),
            self._split(split).labels,
            config.data.step_batch if split == "train" else config.data.batch_size,
            self.num_classes,
            self.binary,
            shuffle,
            config.seed,
            first_epoch,
        )

    def dataset(self, cut: Cut | None, split: str, shuffle: bool, first_epoch: int = 0, augment=None):
        return (
            self.image_dataset(split, shuffle, first_epoch, augment)
            if cut is None
            else self.arrays(cut, split, shuffle, first_epoch).dataset()
        )

    def in_memory(self, cut: Cut | None, first_epoch: int = 0) -> ArrayBatches | None:
        """The training features as arrays for `fit_in_memory` (with the flipped copies' when flips augment)."""
        if cut is None:
            return None
        data = self.arrays(cut, "train", self.config.data.shuffle, first_epoch)
        if self.flip:  # the plan checked that both copies fit
            return dataclasses.replace(
                data,
                flipped=self.features(cut, "train", flipped=True),
                flip_layer=self.model.get_layer(names.AUGMENTATION).layers[0],
            )
        # Features on disk (a `RowFile`) are read a few batches at a time; an array in memory is copied into a tensor.
        fits = not isinstance(data.inputs, np.ndarray) or data.inputs.nbytes <= FIT_IN_MEMORY_MAX_BYTES
        return data if fits else None  # else Keras's fit over batches streamed from the array

    def for_phase(self, plan: PhasePlan, first_epoch: int = 0, arrays: bool = False):
        """The model to fit and its data; `first_epoch` (in the phase) sets where shuffling resumes.

        The validation dataset is None when the phase can validate on features
        at `val_cut` (see `validation`): one inference call per epoch
        instead of Keras's evaluate loop (measured: 75 ms an epoch on 1,000
        cats-vs-dogs validation features). `arrays` (several replicas): the
        training data as `ArrayBatches` of features or images, validated by `validation`.
        """
        cut = plan.cut
        fitted = self.model if cut is None else trainable_part(self.model, cut)
        augment = self._augmenter(plan)
        if arrays:
            if augment is not None:
                raise ConfigError(plan.augment.key, "augmentation on batches does not run across workers yet; set none")
            return fitted, self.train_arrays(cut, first_epoch), None
        val_ds = self.dataset(cut, "val", False) if plan.val_cut is None else None
        shuffle = self.config.data.shuffle
        train = self.in_memory(cut, first_epoch) or self.dataset(cut, "train", shuffle, first_epoch, augment)
        return fitted, train, val_ds

    def _augmenter(self, plan: PhasePlan):
        """The phase's augmentation of training batches (None: none, or the phase trains on features)."""
        if plan.augment is None or plan.cut is not None:
            return None
        spec = plan.augment
        check_batch_augment(spec.config, self.config.data.image_size, spec.key)
        return batch_augmenter(spec.config, self.config.seed, in_model=spec.in_model, key=spec.key)

    def _split(self, split: str) -> ScreenedSplit:
        found = self.splits.get(split)
        if found is None:
            raise KeyError(split)
        return found

    def steps_per_epoch(self) -> int:
        """Training steps in one epoch over the training split (micro-batches when accumulating: Keras's schedules
        count them)."""
        return steps_per_epoch(len(self.splits.train), self.config.data.step_batch)

    def train_arrays(self, cut: Cut | None, first_epoch: int = 0) -> ArrayBatches:
        """The training split as arrays: features at `cut` (with flipped copies when flips augment), or the decoded
        images."""
        if cut is not None:
            return self.in_memory(cut, first_epoch) or self.arrays(cut, "train", self.config.data.shuffle, first_epoch)
        config = self.config
        return ArrayBatches(
            self.splits.train.images,
            self.splits.train.labels,
            config.data.step_batch,
            self.num_classes,
            self.binary,
            config.data.shuffle,
            config.seed,
            first_epoch,
        )

    def validation(self, plan: PhasePlan, objective: Objective):
        """The callback that writes the `val_*` figures: through the trainable part on validation features (at
        `val_cut`, else the phase's cut), or through the full model on the validation images."""
        from tlcli.training.callbacks import FeatureValidation  # imports Keras

        cut = plan.validation_cut
        if cut is not None:
            return self.feature_validation(cut, objective)
        images = self.splits.val.images
        return FeatureValidation(self.model, images, self.targets("val"), objective.loss(), objective.metrics())

    def targets(self, split: str) -> np.ndarray:
        return np.asarray(encode_targets(self._split(split).labels, self.num_classes, self.binary))

    def feature_validation(self, val_cut: Cut, objective: Objective):
        """A callback that validates through the trainable part on validation features."""
        from tlcli.training.callbacks import FeatureValidation  # imports Keras

        part, features = trainable_part(self.model, val_cut), self.features(val_cut, "val")
        return FeatureValidation(part, features, self.targets("val"), objective.loss(), objective.metrics())

    def evaluate(self, cut: Cut | None, objective: Objective) -> tuple[dict[str, float], dict[str, Any]]:
        """Final loss/metrics and class probabilities on val (and test), with the final weights.

        One inference pass per split; loss and metrics come from its outputs,
        so the saved model is not recompiled for evaluation.
        """
        final: dict[str, float] = {}
        probabilities: dict[str, Any] = {}
        loss, metrics = objective.loss(), objective.metrics()
        for split in ("val", "test"):
            if not len(self.splits.get(split) or ()):
                continue
            outputs = self.outputs(cut, split)
            final |= self.figures(split, outputs, loss, metrics)
            probabilities[split] = to_class_probabilities(outputs, self.binary)
        return final, probabilities

    def outputs(self, cut: Cut | None, split: str) -> np.ndarray:
        """The model's outputs on `split` with the current weights, from features at `cut` (None: from the images)."""
        if cut is None and across_replicas(self.model):  # Keras's predict would give every replica the images
            images = self._split(split).images
            return np.asarray(run_in_batches(self.model, images, self.config.data.batch_size), dtype="float32")
        if cut is None:
            return np.asarray(self.model.predict(self.dataset(None, split, False), verbose=0), dtype="float32")
        if cut.label not in self._parts:
            self._parts[cut.label] = trainable_part(self.model, cut)
        return np.asarray(run_in_batches(self._parts[cut.label], self.features(cut, split)), dtype="float32")

    def figures(self, split: str, outputs: np.ndarray, loss, metrics) -> dict[str, float]:
        """`{split}_loss` (the data loss, no penalty) and `{split}_<metric>` of these outputs."""
        targets = self.targets(split)
        found = {f"{split}_loss": round(mean_loss(loss, targets, outputs), 6)}
        for metric in metrics:
            metric.reset_state()
            metric.update_state(targets, outputs)
            found[f"{split}_{metric.name}"] = round(float(metric.result()), 6)
        return found


class ImageInputs(PhaseInputs):
    """The pass decoded the images: phases on images train the full model; features are one inference pass per cut."""

    def __init__(self, model, sets: Mapping[str, DecodedImages], config: ExperimentConfig, num_classes: int):
        super().__init__(model, config, num_classes)
        self.splits = Splits.of(sets)

    def _compute(self, cut: Cut, split: str, flipped: bool) -> np.ndarray:
        images = self._split(split).images
        return run_in_batches(extractor_for(self.model, cut), flip_pixels(images, self.flip) if flipped else images)

    def image_dataset(self, split: str, shuffle: bool, first_epoch: int = 0, augment=None):
        config = self.config
        return make_dataset(
            self._split(split),
            batch_size=config.data.step_batch if split == "train" else config.data.batch_size,
            num_classes=self.num_classes,
            binary=self.binary,
            shuffle=shuffle,
            seed=config.seed,
            first_epoch=first_epoch,
            augment=augment,
        )


class FeatureInputs(PhaseInputs):
    """The pass extracted features at `extraction_cut`: every phase trains on them or on features derived from them."""

    def __init__(
        self, model, sets: Mapping[str, FeatureSet], extraction_cut: Cut, config: ExperimentConfig, num_classes: int
    ):
        super().__init__(model, config, num_classes)
        self.splits, self.extraction_cut = Splits.of(sets), extraction_cut

    def _compute(self, cut: Cut, split: str, flipped: bool) -> np.ndarray:
        source = self._split(split)
        held = source.flipped if flipped else source.features
        if cut == self.extraction_cut:
            return held
        # A phase cut above the extraction cut (e.g. the head-first phase of a fine-tuned run).
        return run_in_batches(bridge(self.model, self.extraction_cut, cut), held)
