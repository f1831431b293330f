"""Fine-tune the top of a frozen backbone together with its head, TF-Slim's ``--trainable_scopes`` way.

The head (scripts/core/head.py) was trained on cached bottlenecks of a frozen backbone.
This stage unfreezes the top of that backbone and trains it with the head on augmented
training images, with a small learning rate, keeping the epoch of lowest validation loss.

How a frozen graph becomes trainable again: every Const node of backbone.pb whose name
matches the ``trainable`` regex (``re.search``; float32, rank >= 1: weights, biases,
batch-norm scales and offsets) becomes a ``tf.Variable`` initialised with its value, and
``tf.import_graph_def(..., input_map={"<const>:0": variable})`` wires the variable in
where the constant was used. Batch-norm statistics (``.../moving_mean``,
``.../moving_variance``) stay constants, as in TF-Slim, where they are not trainable.
The head's layers become variables too; its standardisation (mean, scale) stays constant.
Features that were constant on the head's training set (standardisation scale 1e6) are
ignored (their weights set to zero and kept there): on that set the head's output is the
same, and a backbone that starts to vary such a feature would otherwise see the change
multiplied a million times (measured on MobileNet: an epoch's training loss 1.7 instead of 0.12).

What is written is the epoch of lowest validation loss (epoch 0 = the starting point, so
fine-tuning does not make the validation loss worse): the trained values go back into the Const nodes of
backbone.pb's own GraphDef. The result has the same nodes, names, input and bottleneck
as the input backbone.pb, with no head and no training op: a drop-in backbone.pb for the
bottlenecks, freeze, IR and ``predict``.

    python -m scripts.model.finetune --backbone-pb B --backbone-json BJ --head H.npz \\
        --central-fraction 1.0 --resize bilinear --train-tfrecords T... --validation-tfrecords V... \\
        --settings '{"trainable": "^MobilenetV1/Conv2d_1[23]_", "learning_rate": 1e-4, ...}' \\
        --output-backbone-pb OB --output-backbone-json OBJ --output-head OH.npz \\
        --history HIST.csv --threads 2

Settings (config ``finetune``, without ``enabled``, plus ``augment``; every key required):
    trainable                regex over the backbone's Const node names: what is trained
    learning_rate            step size of the optimizer (small: the backbone is pretrained)
    optimizer                adam, momentum (0.9) or sgd
    epochs                   largest number of epochs
    steps_per_epoch          batches per epoch; null = one pass over the training images
    batch_size               images per batch
    early_stopping_patience  stop after this many epochs without a lower validation loss
    l2                       weight decay: l2 * sum(w^2) / 2 over trained weight tensors (rank >= 2)
    seed                     batch order and augmentation draws
    augment                  scripts/core/augment.py settings (flip, rotate90, crop, color_jitter)

history.csv: epoch 0 is the starting point (validation only; train columns nan); for later
epochs the train columns average the epoch's augmented batches, the validation columns are
measured after it. Training images are kept encoded in memory (batches are drawn at
random); validation images are preprocessed once and kept when they fit in 256 MB, else
decoded again after each epoch.

Same inputs and threads, same bytes: op determinism, fixed seeds, and an augmentation
draw seeded by (seed, epoch, position) whichever thread decodes the image.
"""
import argparse
import contextlib
import json
import math
import re
import sys

import numpy as np

from scripts.core import atomic, augment, images, inference, model_check, records, tfcompat
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError, run_cli
from scripts.core.progress import Progress

SETTINGS_KEY = "config key finetune"
SETTINGS = ("trainable", "learning_rate", "optimizer", "epochs", "steps_per_epoch", "batch_size",
            "early_stopping_patience", "l2", "seed", "augment")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy"]
HEAD_VARIABLES = ("hidden_w", "hidden_b", "logits_w", "logits_b")
MOMENTUM = 0.9
OPTIMIZERS = {
    "adam": lambda tf, rate: tf.train.AdamOptimizer(rate),
    "momentum": lambda tf, rate: tf.train.MomentumOptimizer(rate, MOMENTUM),
    "sgd": lambda tf, rate: tf.train.GradientDescentOptimizer(rate),
}
# TF-Slim's batch-norm statistics: moving averages, not parameters (and a variance must stay positive).
BATCH_NORM_STATISTICS = re.compile(r"/moving_(mean|variance)$")
VALIDATION_CACHE_BYTES = 256 * 2 ** 20  # keep preprocessed validation pixels in memory up to this size
IMPROVEMENT = 1e-7  # a validation loss must drop by more than float noise to count as better


# ------------------------------------------------------------------ settings
def _require(condition, key, message):
    if not condition:
        raise PipelineError(f"{SETTINGS_KEY}.{key}: {message}")


def check_settings(settings):
    """The settings, or one line naming the first bad key."""
    if not isinstance(settings, dict):
        raise PipelineError(f"{SETTINGS_KEY}: must be a mapping of {', '.join(SETTINGS)}")
    for key in SETTINGS:
        _require(key in settings, key, "missing")
    unknown = sorted(set(settings) - set(SETTINGS))
    _require(not unknown, unknown[0] if unknown else "", f"unknown key (known: {', '.join(SETTINGS)})")
    _require(isinstance(settings["trainable"], str) and settings["trainable"], "trainable", "must be a regex")
    try:
        re.compile(settings["trainable"])
    except re.error as error:
        raise PipelineError(f"{SETTINGS_KEY}.trainable: not a regex ({error})") from None
    _require(settings["optimizer"] in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("early_stopping_patience", 1), ("seed", 0)):
        _require(_is_int(settings[key]) and settings[key] >= low, key, f"must be an integer >= {low}")
    steps = settings["steps_per_epoch"]
    _require(steps is None or (_is_int(steps) and steps >= 1), "steps_per_epoch", "must be null or an integer >= 1")
    _require(_is_number(settings["learning_rate"]) and settings["learning_rate"] > 0, "learning_rate",
             "must be a number > 0")
    _require(_is_number(settings["l2"]) and settings["l2"] >= 0, "l2", "must be a number >= 0")
    _require(isinstance(settings["augment"], dict) and set(settings["augment"]) <= set(augment.NO_AUGMENTATION),
             "augment", f"must be a mapping of {', '.join(augment.NO_AUGMENTATION)}")
    return settings


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------ what is trained
def trainable_constants(graph_def, pattern):
    """{Const node name: float32 value} of the weights the regex unfreezes, in graph order."""
    tf = tfcompat.tf_v1()
    regex = re.compile(pattern)
    constants = {}
    for node in graph_def.node:
        if node.op != "Const" or not regex.search(node.name) or BATCH_NORM_STATISTICS.search(node.name):
            continue
        tensor = node.attr["value"].tensor
        if tensor.dtype == tf.float32.as_datatype_enum and len(tensor.tensor_shape.dim) >= 1:
            constants[node.name] = tf.make_ndarray(tensor)
    if not constants:
        raise PipelineError(f"{SETTINGS_KEY}.trainable: {pattern!r} matches no float weight constant of "
                            "the backbone (e.g. '^MobilenetV1/Conv2d_13_' or '^InceptionV3/Mixed_7c/')")
    return constants


# ------------------------------------------------------------------ the training graph
class Network:
    """Backbone (matched constants as variables) + head, a loss and a training step, in one graph."""

    def __init__(self, graph_def, info, head, constants, settings, threads):
        tf = tfcompat.tf_v1()
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(settings["seed"])  # no random op is used; required by op determinism if one were
            self._build(tf, graph_def, info, head, constants, settings)
        model_check.check_tensor_sizes(self.graph, "backbone.pb with the head")
        self.session = tf.Session(graph=self.graph, config=tf.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1))
        self.session.run(self.initialise)

    def _build(self, tf, graph_def, info, head, constants, settings):
        size = info["input_size"]
        self.pixels = tf.placeholder(tf.float32, [None, size, size, 3], name="pixels")
        self.labels = tf.placeholder(tf.int64, [None], name="labels")
        with tf.name_scope("trainable"):
            self.backbone_variables = {name: tf.Variable(value, name=name) for name, value in constants.items()}
        input_map = {inference.tensor_name(name): tf.convert_to_tensor(variable)
                     for name, variable in self.backbone_variables.items()}
        input_map[info["input_tensor"]] = self.pixels
        copy = tf.GraphDef()
        copy.CopyFrom(graph_def)  # import_graph_def adds default attributes to the GraphDef it is given
        bottleneck, = tf.import_graph_def(copy, input_map=input_map,
                                          return_elements=[info["bottleneck_tensor"]], name="backbone")
        self.logits = self._head(tf, bottleneck, info["bottleneck_size"], head)
        classes = head["logits_b"].shape[0]
        losses = -tf.reduce_sum(tf.one_hot(self.labels, classes) * tf.nn.log_softmax(self.logits), axis=1)
        self.cross_entropy = tf.reduce_mean(losses)
        self.correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(self.logits, 1), self.labels), tf.float32))
        self.train_step = self._train_step(tf, settings)
        self.initialise = tf.global_variables_initializer()

    def _head(self, tf, bottleneck, width, head):
        with tf.name_scope("head"):
            self.head_variables = {key: tf.Variable(head[key], name=key) for key in HEAD_VARIABLES if key in head}
            return head_lib.tf_logits(tf, tf.reshape(bottleneck, [-1, width]), head, self.head_variables)

    def _train_step(self, tf, settings):
        """One optimizer step on cross-entropy + L2; constants the loss does not reach stay as they are."""
        variables = {**self.backbone_variables, **self.head_variables}
        loss = self.cross_entropy
        weights = [variable for variable in variables.values() if len(variable.shape) >= 2]
        if settings["l2"]:
            loss += settings["l2"] * tf.add_n([tf.nn.l2_loss(weight) for weight in weights])
        names = list(variables)
        gradients = tf.gradients(loss, [variables[name] for name in names])
        self.trained = [name for name, gradient in zip(names, gradients) if gradient is not None
                        and name in self.backbone_variables]
        if not self.trained:
            raise PipelineError(f"{SETTINGS_KEY}.trainable: {settings['trainable']!r} matches only constants "
                                "the bottleneck does not depend on")
        pairs = [(gradient, variables[name]) for name, gradient in zip(names, gradients) if gradient is not None]
        return OPTIMIZERS[settings["optimizer"]](tf, settings["learning_rate"]).apply_gradients(pairs)

    def train(self, pixels, labels):
        """One step; returns (cross-entropy, correct count) of the batch before the step."""
        _, loss, correct = self.session.run([self.train_step, self.cross_entropy, self.correct],
                                            {self.pixels: pixels, self.labels: labels})
        return float(loss), float(correct)

    def predict_logits(self, pixels):
        return self.session.run(self.logits, {self.pixels: pixels})

    def snapshot(self):
        """The current values of the trained backbone constants and of the head's layers."""
        backbone, head = self.session.run([{name: self.backbone_variables[name] for name in self.trained},
                                           self.head_variables])
        return {"backbone": backbone, "head": head}


@contextlib.contextmanager
def op_determinism():
    """TensorFlow's deterministic kernels while training; the process-wide flag is restored after."""
    tfcompat.tf_v1()
    from tensorflow.python.framework import config  # the public API has no way to restore the flag
    before = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        yield
    finally:
        if not before:
            config.disable_op_determinism()


# ------------------------------------------------------------------ images
def read_training_examples(paths, classes):
    """(encoded, label) of every training image, kept encoded in memory: batches are drawn at random."""
    examples = [(example["encoded"], example["label"]) for example in records.read_examples(paths)]
    if not examples:
        raise PipelineError(f"{' '.join(paths)}: no training images to fine-tune on")
    check_labels([label for _, label in examples], classes, paths)
    return examples


def check_labels(labels, classes, paths):
    if len(labels) and not 0 <= min(labels) <= max(labels) < classes:
        raise PipelineError(f"{' '.join(paths)}: labels outside the head's {classes} classes")


def epoch_order(count, settings, epoch):
    """The image indices of one epoch: seeded permutations, as many as the steps need."""
    rng = np.random.default_rng([settings["seed"], epoch])
    steps = settings["steps_per_epoch"]
    needed = count if steps is None else steps * settings["batch_size"]
    order = np.concatenate([rng.permutation(count) for _ in range(-(-needed // count))])
    return order[:needed]


def training_batches(examples, order, contract, settings, epoch, threads):
    """Yield (pixels, labels) of augmented images; each image's draw is seeded by its place, not its thread."""
    items = ((examples[index], (settings["seed"], epoch, position)) for position, index in enumerate(order))

    def prepare(item):
        (encoded, _), seed = item
        return augment.augmented_pixels(encoded, contract, np.random.default_rng(seed), settings["augment"])

    for pixels, batch in inference.preprocessed_batches(items, contract, settings["batch_size"], threads, prepare):
        yield pixels, np.array([label for (_, label), _ in batch], np.int64)


class ValidationSet:
    """The validation images: preprocessed once and kept when small, else decoded again each epoch."""

    def __init__(self, paths, contract, batch_size, threads, classes):
        self.paths, self.contract, self.batch_size, self.threads = paths, contract, batch_size, threads
        count = inference.count_records(paths)
        if not count:
            raise PipelineError(f"{' '.join(paths)}: no validation images (fine-tuning stops early on them)")
        self.pixels, self.labels = None, None
        if count * contract["input_size"] ** 2 * 3 * 4 <= VALIDATION_CACHE_BYTES:
            batches = list(inference.preprocessed_batches(records.read_examples(paths), contract,
                                                          batch_size, threads))
            self.pixels = np.concatenate([pixels for pixels, _ in batches])
            self.labels = np.array([example["label"] for _, batch in batches for example in batch], np.int64)
            check_labels(self.labels, classes, paths)

    def loss_and_accuracy(self, logits_of):
        """Mean cross-entropy and accuracy of ``logits_of(pixels)`` over the validation images."""
        if self.pixels is not None:
            logits = np.concatenate([logits_of(self.pixels[start:start + self.batch_size])
                                     for start in range(0, len(self.pixels), self.batch_size)])
            labels = self.labels
        else:
            logits, labels, _, _ = inference.run_over_tfrecords(logits_of, self.contract, self.paths, self.batch_size,
                                                                self.threads, label="validation")
            labels = np.asarray(labels, np.int64)
            check_labels(labels, logits.shape[1], self.paths)
        return cross_entropy(logits, labels), float((logits.argmax(axis=1) == labels).mean())


def cross_entropy(logits, labels):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


# ------------------------------------------------------------------ training
def run_epoch(network, examples, contract, settings, epoch, threads):
    """Train one epoch; returns the mean cross-entropy and accuracy of its (augmented) batches."""
    order = epoch_order(len(examples), settings, epoch)
    progress = Progress(f"fine-tuning epoch {epoch}/{settings['epochs']}", len(order))
    loss_sum = correct = 0.0
    for pixels, labels in training_batches(examples, order, contract, settings, epoch, threads):
        loss, right = network.train(pixels, labels)
        loss_sum, correct = loss_sum + loss * len(labels), correct + right
        progress.update(len(labels))
    return loss_sum / len(order), correct / len(order)


def train(network, examples, validation, contract, settings, threads, log):
    """Epochs with early stopping on validation loss; returns (best snapshot, history rows, summary)."""
    loss, accuracy = validation.loss_and_accuracy(network.predict_logits)
    history = [[0, float("nan"), float("nan"), loss, accuracy]]
    log(f"before fine-tuning: validation loss {loss:.4f} acc {accuracy:.4f}")
    best = {"epoch": 0, "loss": loss, "accuracy": accuracy, "values": network.snapshot()}
    for epoch in range(1, settings["epochs"] + 1):
        train_loss, train_accuracy = run_epoch(network, examples, contract, settings, epoch, threads)
        loss, accuracy = validation.loss_and_accuracy(network.predict_logits)
        history.append([epoch, train_loss, train_accuracy, loss, accuracy])
        improved = loss < best["loss"] - IMPROVEMENT
        if improved:
            best = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "values": network.snapshot()}
        log(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_accuracy:.4f}, validation loss "
            f"{loss:.4f} acc {accuracy:.4f}{' (best so far)' if improved else ''}")
        if epoch - best["epoch"] >= settings["early_stopping_patience"]:
            log(f"early stop at epoch {epoch}: no lower validation loss since epoch {best['epoch']}")
            break
    summary = {"best_epoch": best["epoch"], "epochs_run": len(history) - 1,
               "stopped_early": len(history) - 1 < settings["epochs"],
               "validation_loss_before": history[0][3], "validation_accuracy_before": history[0][4],
               "validation_loss": best["loss"], "validation_accuracy": best["accuracy"]}
    return best["values"], history, summary


# ------------------------------------------------------------------ outputs
def fine_tuned_backbone(graph_def, values):
    """backbone.pb's own GraphDef with the trained values in its Const nodes: same names, no head, no training."""
    tf = tfcompat.tf_v1()
    result = tf.GraphDef()
    result.CopyFrom(graph_def)
    for node in result.node:
        if node.name in values:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(values[node.name], np.float32)))
    return result


def fine_tuned_head(head, values):
    """The head with its trained layers; the standardisation (mean, scale) is kept as it was."""
    return {key: np.asarray(values.get(key, head[key]), np.float32) for key in head}


def check_inputs(info, head):
    if head["mean"].shape[0] != info["bottleneck_size"]:
        raise PipelineError(f"head: {head['mean'].shape[0]} features, the backbone gives {info['bottleneck_size']}")


def finetune(backbone_pb, backbone_json, head_path, preprocessing, train_tfrecords, validation_tfrecords,
             settings, output_backbone_pb, output_backbone_json, output_head, history_path, threads=1,
             log=None):
    """Fine-tune, then write the four outputs (each atomically); returns backbone.json's ``fine_tuned``."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = check_settings(settings)
    info, head = atomic.read_json(backbone_json), head_lib.load(head_path)
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], preprocessing["central_fraction"],
                                             preprocessing["resize"])
    check_inputs(info, head)
    graph_def = inference.load_graph_def(backbone_pb)
    constants = trainable_constants(graph_def, settings["trainable"])
    classes = head["logits_b"].shape[0]
    examples = read_training_examples(train_tfrecords, classes)
    validation = ValidationSet(validation_tfrecords, contract, settings["batch_size"], threads, classes)
    with op_determinism():
        network = Network(graph_def, info, head, constants, settings, threads)
        log(f"fine-tuning {len(network.trained)} backbone constants matching {settings['trainable']!r} "
            f"and the head on {len(examples)} training images")
        values, history, summary = train(network, examples, validation, contract, settings, threads, log)
        network.session.close()
    result = {"trainable": settings["trainable"], "variables": len(network.trained),
              "parameters": int(sum(constants[name].size for name in network.trained)),
              "ignored_constant_features": int((head["scale"] == 0).sum()), **summary, "settings": settings}
    atomic.write_bytes(output_backbone_pb,
                       fine_tuned_backbone(graph_def, values["backbone"]).SerializeToString(deterministic=True))
    atomic.write_json(output_backbone_json, {**info, "fine_tuned": result})
    head_lib.save(output_head, fine_tuned_head(head, values["head"]))
    atomic.write_table(history_path, HISTORY_COLUMNS, history)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--backbone-pb", required=True, help="frozen backbone.pb to fine-tune")
    inputs.add_argument("--backbone-json", required=True, help="its backbone.json (tensor names, sizes)")
    inputs.add_argument("--head", required=True, help="head.npz trained on the frozen backbone's bottlenecks")
    inputs.add_argument("--central-fraction", type=float, required=True, help="preprocessing: central crop")
    inputs.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), required=True, help="preprocessing: resize")
    inputs.add_argument("--train-tfrecords", nargs="+", required=True, help="training images")
    inputs.add_argument("--validation-tfrecords", nargs="+", required=True, help="images for early stopping")
    training = parser.add_argument_group("training")
    training.add_argument("--settings", required=True,
                          help="the `finetune` config section (without `enabled`) plus `augment`, as JSON")
    training.add_argument("--threads", type=int, required=True, help="TensorFlow and image-decoding threads")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--output-backbone-pb", required=True, help="the fine-tuned backbone (drop-in .pb)")
    outputs.add_argument("--output-backbone-json", required=True, help="backbone.json + its `fine_tuned` record")
    outputs.add_argument("--output-head", required=True, help="the fine-tuned head.npz")
    outputs.add_argument("--history", required=True, help="per-epoch losses and accuracies (.csv)")
    args = parser.parse_args(argv)
    try:
        settings = json.loads(args.settings)
    except ValueError as error:
        raise PipelineError(f"--settings: not JSON ({error})") from None
    preprocessing = {"central_fraction": args.central_fraction, "resize": args.resize}
    result = finetune(args.backbone_pb, args.backbone_json, args.head, preprocessing, args.train_tfrecords,
                      args.validation_tfrecords, settings, args.output_backbone_pb, args.output_backbone_json,
                      args.output_head, args.history, args.threads)
    print(f"fine-tuned {result['variables']} constants ({result['parameters']} parameters) matching "
          f"{result['trainable']!r}: best epoch {result['best_epoch']} of {result['epochs_run']}, validation loss "
          f"{result['validation_loss_before']:.4f} -> {result['validation_loss']:.4f}, accuracy "
          f"{result['validation_accuracy_before']:.4f} -> {result['validation_accuracy']:.4f}; "
          f"wrote {args.output_backbone_pb}")


if __name__ == "__main__":
    run_cli(main)
