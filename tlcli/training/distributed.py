"""Training on several replicas (`tf.distribute`): several devices of one machine, or several machines.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` (keras #20585: a
`PerReplica` value reaches a tensor conversion on the first step), so every
phase on more than one replica trains with this loop instead: the strategy's
own input distribution (`distribute_datasets_from_function`), `strategy.run`
of a step that computes the loss over the global batch under a
`GradientTape`, and the phase's compiled Keras optimizer and metrics. The same
loop runs under `MirroredStrategy`, so CI proves it on two logical CPUs.

The global batches are exactly one process's: the same visiting order
(`ArrayBatches.order`, a function of the seed and the epoch) cut into
`data.batch_size` rows, each replica taking its consecutive share; the loss
is each replica's sum divided by the global batch's size, as
`tf.nn.compute_average_loss` does, so the summed gradient is the one-process
gradient. The callbacks are those of a one-process phase, called in the same
order; whether to stop is agreed by every worker after each epoch (a
collective sum of their `stop_training`), so an early stop or a Ctrl-C
on any worker ends the phase on all of them at the same epoch.
"""

from __future__ import annotations

import numpy as np

from tlcli.data.batches import ArrayBatches, encode_targets
from tlcli.data.decoded import SkippedFile
from tlcli.data.splits import label_array
from tlcli.errors import ConfigError
from tlcli.features.extract import FeatureSet
from tlcli.training.fit_in_memory import fit_in_memory
from tlcli.training.phases import phases_of


def replicas(strategy) -> int:
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def is_distributed(strategy) -> bool:
    """More than one replica: phases train with `fit_distributed`."""
    return strategy is not None and replicas(strategy) > 1


def fit_arrays(model, data: ArrayBatches, strategy, **fit) -> None:
    """`fit_in_memory` on one replica, `fit_distributed` on several."""
    if is_distributed(strategy):
        fit_distributed(model, data, strategy, **fit)
    else:
        fit_in_memory(model, data, **fit)


def fit_distributed(
    model,
    data: ArrayBatches,
    strategy,
    *,
    epochs: int,
    initial_epoch: int = 0,
    class_weight: dict[int, float] | None = None,
    callbacks=(),
) -> None:
    """`model.fit(...)` over `data` on every replica of `strategy` (the model compiled under its scope)."""
    import keras

    step = _StepFunction(model, data, strategy, class_weight)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, model=model, verbose=0, epochs=epochs, steps=data.steps
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs = None
    for count, epoch in enumerate(range(initial_epoch, epochs)):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = step.epoch(data.order(data.first_epoch + count), data.first_epoch + count, callback_list)
        callback_list.on_epoch_end(epoch, logs)
        model.stop_training = agree_to_stop(strategy, bool(model.stop_training))
        if model.stop_training:
            break
    if epochs > initial_epoch:  # as Keras's fit ends: the moving average (`ema_epochs`) into the variables
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=logs)


class _StepFunction:
    """One compiled distributed step and the per-replica shares of each global batch."""

    def __init__(self, model, data: ArrayBatches, strategy, class_weight: dict[int, float] | None):
        import tensorflow as tf

        self.model, self.data, self.strategy = model, data, strategy
        self.targets = np.asarray(encode_targets(data.labels, data.num_classes, data.binary), dtype=np.float32)
        weights = data.sample_weights(class_weight or None)
        self.weights = weights if weights is not None else np.ones(len(data.labels), dtype=np.float32)
        self.order: np.ndarray | None = None
        self.flips: np.ndarray | None = None
        self.count = replicas(strategy)
        with strategy.scope():
            _build(model, data.inputs[: data.batch_size], self.targets[: data.batch_size])
            self.accumulation = _Accumulation.of(model)
        self.spec = (
            tf.TensorSpec((None, *data.inputs.shape[1:]), tf.float32),
            tf.TensorSpec((None, *self.targets.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.float32),
            tf.TensorSpec((), tf.float32),
        )
        self.run = tf.function(self._global_step)
        self.add = tf.function(lambda iterator: self._global_step(iterator, apply=False))

    def epoch(self, order: np.ndarray, epoch: int, callback_list) -> dict[str, float]:
        """One epoch over `order`; returns the epoch's logs (the loss: the mean over images of each step's loss, as
        Keras logs it).

        With flipped copies (flips augment cached features), each image's copy is drawn per epoch from the seed, the
        same on every worker.
        """
        self.order = order
        if self.data.flipped is not None:
            self.flips = np.random.default_rng([self.data.seed, epoch, 1]).random(len(order)) < 0.5
        iterator = iter(self.strategy.distribute_datasets_from_function(self._dataset))
        total, seen = 0.0, 0
        for index in range(self.data.steps):
            callback_list.on_train_batch_begin(index)
            size = len(order[index * self.data.batch_size : (index + 1) * self.data.batch_size])
            loss = float(self._step(iterator))
            total, seen = total + loss * size, seen + size
            logs = {
                **{k: float(v) for k, v in self.model.get_metrics_result().items() if k != "loss"},
                "loss": total / seen,
            }
            callback_list.on_train_batch_end(index, logs)
            if self.model.stop_training:
                break
        return logs

    def _dataset(self, context):
        """This worker's per-replica batches: for each global batch, the consecutive share of each of its local
        replicas."""
        import tensorflow as tf

        first = context.input_pipeline_id * (self.count // context.num_input_pipelines)
        local = self.count // context.num_input_pipelines
        data, order = self.data, self.order

        def shares():
            for start in range(0, len(order), data.batch_size):
                rows = order[start : start + data.batch_size]
                cuts = np.linspace(0, len(rows), self.count + 1).astype(int)  # as even as the global batch allows
                for replica in range(first, first + local):
                    index = rows[cuts[replica] : cuts[replica + 1]]
                    yield self._rows(index), self.targets[index], self.weights[index], np.float32(len(rows))

        return tf.data.Dataset.from_generator(shares, output_signature=self.spec)

    def _rows(self, index: np.ndarray) -> np.ndarray:
        rows = self.data.inputs[index].astype(np.float32)
        if self.data.flipped is not None:
            flip = self.flips[index]
            rows[flip] = self.data.flipped[index[flip]]
        return rows

    def _step(self, iterator):
        """One compiled step; accumulating, the host chooses whether it applies or only adds its gradient."""
        if self.accumulation is None or self.accumulation.applies(self.model.optimizer):
            return self.run(iterator)
        return self.add(iterator)

    def _global_step(self, iterator, apply: bool = True):
        import tensorflow as tf

        step = self._replica_step if apply else self._replica_add
        per_replica = self.strategy.run(step, args=next(iterator))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _replica_step(self, x, y, w, global_size):
        """The share's loss (`_replica_gradients`), its gradient applied (summed over the replicas by the optimizer;
        accumulating, with the micro-batches' gradients this replica added since the last update)."""
        loss, gradients = self._replica_gradients(x, y, w, global_size)
        if self.accumulation is None:
            self.model.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        else:
            self.accumulation.apply(self.model.optimizer, gradients, self.model.trainable_variables)
        return loss

    def _replica_add(self, x, y, w, global_size):
        """Accumulating: the share's loss, its gradient added to this replica's sum, the step counted."""
        loss, gradients = self._replica_gradients(x, y, w, global_size)
        self.accumulation.add(gradients)
        self.model.optimizer._iterations.assign_add(1)  # a micro-batch counted, as Keras counts it (`_Accumulation`)
        return loss

    def _replica_gradients(self, x, y, w, global_size):
        """The share's loss sum over the global batch size (plus this replica's part of the penalty) and its gradient
        (of the scaled loss under mixed precision: the optimizer unscales it); the metrics updated."""
        import tensorflow as tf

        model = self.model
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            per_example = model.loss.call(y, predictions)  # unreduced: one value per image
            loss = tf.reduce_sum(per_example * w) / global_size
            if model.losses:  # the penalty once over all replicas (their gradients are summed)
                loss += tf.add_n(model.losses) / self.count
        gradients = tape.gradient(model.optimizer.scale_loss(loss), model.trainable_variables)
        model.compute_metrics(x, y, predictions, sample_weight=None)
        return loss, gradients


class _Accumulation:
    """Gradient accumulation (`data.micro_batch`) across replicas, as Keras accumulates on one device: the same mean
    gradient, applied on every `steps`-th micro-batch at the same learning rate and the same Adam step.

    Keras applies an accumulating optimizer's update under a `cond` whose branch all-reduces the gradients, which
    tf.distribute refuses in replica context. Here each replica sums its micro-batches' gradients in its own
    variables, the host chooses which step applies (`applies`), and `apply` runs the update branch of Keras's
    `BaseOptimizer._backend_apply_gradients` without the `cond`. Its private pieces are named there; the optimizer
    keeps its `gradient_accumulation_steps`, so its `iterations` (Adam's bias correction), its schedule (the
    micro-batch count `_iterations`) and its saved variables are those of one device.
    """

    def __init__(self, model, steps: int):
        import tensorflow as tf

        self.steps = steps
        self.sums = [
            tf.Variable(
                tf.zeros(v.shape, v.dtype),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,  # one sum per replica
                aggregation=tf.VariableAggregation.SUM,
            )
            for v in model.trainable_variables
        ]

    @classmethod
    def of(cls, model) -> _Accumulation | None:
        """The accumulation the model's optimizer asks for (`check_accumulation` refused what it cannot do)."""
        steps = model.optimizer.gradient_accumulation_steps
        return cls(model, int(steps)) if steps and steps >= 2 else None

    def applies(self, optimizer) -> bool:
        """Whether the next micro-batch completes a batch (`_iterations` counts micro-batches)."""
        return (int(np.asarray(optimizer._iterations.numpy())) + 1) % self.steps == 0

    def add(self, gradients) -> None:
        for total, gradient in zip(self.sums, gradients):
            total.assign_add(gradient)

    def apply(self, optimizer, gradients, variables) -> None:
        """The batch's update from this micro-batch's gradients and the sums (then emptied)."""
        mean = [(gradient + total) / self.steps for gradient, total in zip(gradients, self.sums)]
        mean = optimizer._clip_gradients(mean)
        optimizer._apply_weight_decay(variables)
        optimizer._backend_update_step(mean, variables, optimizer.learning_rate)  # all-reduces, then updates
        optimizer._iterations.assign_add(1)
        for total in self.sums:
            total.assign(total * 0)


def _build(model, x, y) -> None:
    """The optimizer's and the compiled metrics' variables, created under the strategy's scope before tracing (as
    `fit` does)."""
    import tensorflow as tf

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    predictions = model(tf.constant(x, tf.float32), training=False)
    model.compute_metrics(x, y, predictions, sample_weight=None)
    model.reset_metrics()


# ----------------------------------------------------------------------------- agreeing across workers


def agree_to_stop(strategy, stop: bool) -> bool:
    """Whether any worker wants to stop (a collective sum of their wishes); one process decides alone."""
    if not _multi_worker(strategy):
        return stop
    import tensorflow as tf

    flag = strategy.run(lambda: tf.constant(1.0 if stop else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flag, axis=None).numpy() > 0)  # ReduceOp has no MAX


def chief_count(strategy, count: int) -> int:
    """The chief's `count` on every worker (what each worker measured may differ); one process keeps its own."""
    if not _multi_worker(strategy):
        return count
    return int(round(float(_chiefs(strategy, np.float32(count)))))


def broadcast_weights(strategy, model) -> None:
    """Every worker takes the chief's weights (after host-side changes: a restored checkpoint, an exact fit of the
    head)."""
    if not _multi_worker(strategy):
        return
    model.set_weights([_chiefs(strategy, np.asarray(w)) for w in model.get_weights()])


def _chiefs(strategy, value: np.ndarray) -> np.ndarray:
    """The chief's `value` on every worker: a sum across the workers to which only the chief adds its own."""
    import tensorflow as tf

    mine = tf.constant(value if strategy.cluster_resolver.task_id == 0 else np.zeros_like(value))
    return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: mine), axis=None))


def all_gather_bytes(strategy, payload: bytes) -> list[bytes]:
    """Every worker's `payload`, in worker order (uneven sizes: padded to the longest, then cut)."""
    import tensorflow as tf

    if not _multi_worker(strategy):
        return [payload]
    workers = strategy.extended._num_workers  # noqa: SLF001  (public attribute missing; the cluster resolver gives it too)
    sizes = _gather(strategy, tf.constant([len(payload)], tf.int64)).reshape(-1)[:: _local(strategy)]
    longest = -(-int(sizes.max()) // 4) * 4  # collectives take int32, not bytes: whole words
    padded = np.zeros(longest, np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    rows = _gather(strategy, tf.constant(padded.view(np.int32)[None, :])).reshape(-1, longest // 4)[:: _local(strategy)]
    return [rows[w].view(np.uint8)[: int(sizes[w])].tobytes() for w in range(workers)]


def _gather(strategy, value) -> np.ndarray:
    out = strategy.run(lambda: tf_all_gather(value))
    return np.asarray(strategy.experimental_local_results(out)[0])


def tf_all_gather(value):
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_gather(value, axis=0)


def _local(strategy) -> int:
    """Replicas per worker (each contributes a copy to an all-gather)."""
    return max(1, replicas(strategy) // strategy.extended._num_workers)  # noqa: SLF001


def _multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._num_workers > 1  # noqa: SLF001


# ----------------------------------------------------------------------------- the feature exchange


def worker_share(strategy) -> tuple[int, int]:
    """(this worker's index, workers): worker w extracts files w, w + workers, ... of each split, in the split's
    fixed order."""
    if not _multi_worker(strategy):
        return 0, 1
    return int(strategy.cluster_resolver.task_id), int(strategy.extended._num_workers)  # noqa: SLF001


def gather_feature_sets(strategy, part, samples: list, num_classes: int | None):
    """Every worker's share of one split's features, exchanged over the strategy's collectives (no shared disk), as
    the `FeatureSet` one process would have extracted: the kept files in the split's order, their features, hashes
    and skips."""
    import io

    shares = [
        np.load(io.BytesIO(payload), allow_pickle=False)
        for payload in all_gather_bytes(strategy, _packed(part, samples))
    ]
    return _joined(shares, samples, num_classes)


def _packed(part, samples: list) -> bytes:
    """This worker's share as one .npz payload: its features, their rows in the split, and its counts as JSON."""
    import io
    import json

    position = {id(sample): i for i, sample in enumerate(samples)}
    buffer = io.BytesIO()
    meta = {
        "hashes": part.content_hashes,
        "skipped": [[s.path, s.reason] for s in part.skipped],
        "hits": part.hits,
        "extracted": part.extracted,
        "seconds": part.seconds,
    }
    arrays = {
        "features": part.features,
        "rows": np.array([position[id(s)] for s in part.samples], dtype=np.int64),
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }
    if part.flipped is not None:
        arrays["flipped"] = part.flipped
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _joined(shares: list, samples: list, num_classes: int | None) -> FeatureSet:
    """The workers' shares put back in the split's order."""
    import json

    metas = [json.loads(bytes(share["meta"]).decode()) for share in shares]
    rows = np.concatenate([share["rows"] for share in shares])
    order = np.argsort(rows, kind="stable")
    kept = [samples[i] for i in rows[order]]
    flipped = np.concatenate([share["flipped"] for share in shares])[order] if "flipped" in shares[0] else None
    skipped_by_path = {path: reason for meta in metas for path, reason in meta["skipped"]}
    hashes = [h for meta in metas for h in meta["hashes"]]  # in the order of `rows`
    return FeatureSet(
        features=np.concatenate([share["features"] for share in shares])[order],
        flipped=flipped,
        labels=label_array(kept, num_classes),
        samples=kept,
        content_hashes=[hashes[i] for i in order],
        skipped=[
            SkippedFile(str(s.path), skipped_by_path[str(s.path)]) for s in samples if str(s.path) in skipped_by_path
        ],
        hits=sum(m["hits"] for m in metas),
        extracted=sum(m["extracted"] for m in metas),
        seconds=max(m["seconds"] for m in metas),
    )


def check_accumulation(config, plan) -> None:
    """Gradient accumulation (`data.micro_batch`) on several replicas (`_Accumulation`) runs the update branch of
    Keras's optimizer by hand: without the loss scaling of mixed precision, and without the moving average of the
    weights, which Keras updates on every micro-batch in a branch this path does not run. Refused before any work.

    Raises:
        ConfigError: one of them asked for on several replicas with micro-batches.
    """
    if config.data.accumulation < 2 or plan.replicas < 2:
        return
    if plan.mixed_precision:
        raise ConfigError(
            "data.micro_batch",
            "gradient accumulation on several replicas runs without mixed precision; "
            "set runtime.mixed_precision: off or remove data.micro_batch",
        )
    for phase in phases_of(config):
        if phase.averages or phase.optimizer.optimizer_args.get("use_ema"):
            raise ConfigError(
                f"{phase.name}.ema_epochs",
                "the moving average of the weights does not run with data.micro_batch on several replicas; "
                "remove one of them",
            )
