"""Retrain the final layer on cached bottlenecks, with validation-based early stopping.

Written in NumPy: a softmax layer (optionally after one ReLU hidden layer with dropout)
is small enough that plain mini-batch training is fast, and it is bit-for-bit
reproducible on one machine for a given seed. TensorFlow is not needed (TensorBoard
events are written with TensorBoard's own protos).

Outputs: head.npz (scripts/core/head.py), history.csv, TensorBoard events, metrics.json,
test_predictions.npz (the trained model's test-split softmax, from the cached features).
Validation and test metrics average the probabilities of the test-time views given.

    python -m scripts.model.retrain train --train T --validation V --test X --labels L \
        --backbone-json B --settings JSON --experiment NAME --output-head H --output-history C \
        --output-tensorboard D --output-metrics M --output-predictions P
    python -m scripts.model.retrain score ... --head H --history C --mode finetune --output-metrics M
"""
import argparse
import json
import os

import numpy as np

from scripts.core import atomic, blocks, formats, records
from scripts.core import head as head_lib
from scripts.core.contract import note, note_suffix
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import classification_metrics
from scripts.core.progress import Progress

MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
# Training rows the per-epoch training loss and accuracy are measured on (evenly spaced).
MONITOR_ROWS = 4096
# A feature whose std is below this fraction of the median std is treated as constant.
CONSTANT_FEATURE_STD = 1e-3
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy"]


def init_params(rng, width, hidden_units, num_classes):
    params = {}
    if hidden_units:
        params["hidden_w"] = rng.normal(0, np.sqrt(2.0 / width), (width, hidden_units))
        params["hidden_b"] = np.zeros(hidden_units)
        width = hidden_units
    params["logits_w"] = rng.normal(0, np.sqrt(1.0 / width), (width, num_classes)) * 0.01
    params["logits_b"] = np.zeros(num_classes)
    return params


def class_weights(labels, num_classes, mode):
    if mode == "none":
        return np.ones(num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights


def forward_backward(params, x, y, weights, l2, dropout, rng):
    """Weighted cross-entropy loss and its gradients for one mini-batch."""
    activations, mask, pre = x, None, None
    if "hidden_w" in params:
        pre = x @ params["hidden_w"] + params["hidden_b"]
        activations = np.maximum(pre, 0.0)
        if dropout:
            keep = rng.random(activations.shape, dtype=activations.dtype) >= dropout
            mask = keep.astype(activations.dtype) / activations.dtype.type(1.0 - dropout)
            activations = activations * mask
    probs = head_lib.softmax(activations @ params["logits_w"] + params["logits_b"])
    sample_w = weights[y]
    total_w = sample_w.sum()
    loss = -(sample_w * np.log(probs[np.arange(len(y)), y] + 1e-12)).sum() / total_w
    dlogits = probs.copy()
    dlogits[np.arange(len(y)), y] -= 1.0
    dlogits *= (sample_w / total_w)[:, None]
    grads = {"logits_w": activations.T @ dlogits, "logits_b": dlogits.sum(axis=0)}
    if pre is not None:
        dact = dlogits @ params["logits_w"].T
        if mask is not None:
            dact *= mask
        dpre = dact * (pre > 0)
        grads["hidden_w"] = x.T @ dpre
        grads["hidden_b"] = dpre.sum(axis=0)
    for key in ("hidden_w", "logits_w"):
        if key in params:
            loss += 0.5 * l2 * float((params[key] ** 2).sum())
            grads[key] += l2 * params[key]
    return loss, grads


class Optimizer:
    """SGD, momentum or Adam over a dict of parameter arrays."""

    def __init__(self, kind, learning_rate):
        self.kind, self.learning_rate, self.state, self.step_count = kind, learning_rate, {}, 0

    def step(self, params, grads):
        self.step_count += 1
        for key, grad in grads.items():
            params[key] -= self._update(key, grad)

    def _update(self, key, grad):
        if self.kind == "sgd":
            return self.learning_rate * grad
        if self.kind == "momentum":
            velocity = MOMENTUM * self.state.get(key, 0.0) + grad
            self.state[key] = velocity
            return self.learning_rate * velocity
        beta1, beta2 = ADAM_BETAS
        first = beta1 * self.state.get((key, 1), 0.0) + (1 - beta1) * grad
        second = beta2 * self.state.get((key, 2), 0.0) + (1 - beta2) * grad * grad
        self.state[(key, 1)], self.state[(key, 2)] = first, second
        first_hat = first / (1 - beta1 ** self.step_count)
        second_hat = second / (1 - beta2 ** self.step_count)
        return self.learning_rate * first_hat / (np.sqrt(second_hat) + ADAM_EPSILON)


def loss_and_accuracy(head, features, labels):
    if len(labels) == 0:
        return float("nan"), float("nan")
    probs = head_lib.probabilities(head, features)
    return head_lib.cross_entropy(probs, labels), float((probs.argmax(axis=1) == labels).mean())


def standardisation(features):
    """Mean and inverse std per feature; features (nearly) constant in training get a scale of 0.

    Dividing by a tiny std would multiply any later variation of such a feature (another
    precision's rounding, an unseen image, fine-tuning) by up to a million.
    """
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    typical = float(np.median(std[std > 0])) if np.any(std > 0) else 1.0
    scale = np.where(std > CONSTANT_FEATURE_STD * typical, 1.0 / np.maximum(std, 1e-12), 0.0)
    return mean, scale


def train(data, num_classes, settings, log=print):
    """Train a head; returns (head, history rows, summary).

    A softmax layer alone is a convex problem: it is solved to convergence with L-BFGS,
    exactly a multinomial logistic regression (with `l2: auto`, scikit-learn's C=1). A
    hidden layer is trained with mini-batches and early stopping on validation loss.
    """
    if settings["hidden_units"] == 0:
        return train_linear(data, num_classes, settings, log)
    return train_minibatch(data, num_classes, settings, log)


def train_linear(data, num_classes, settings, log=print):
    """The softmax layer by L-BFGS on the regularised, weighted cross-entropy; at most ``epochs`` iterations."""
    from scipy.optimize import minimize
    x_train, y_train = data["train"]["features"].astype(np.float64), data["train"]["labels"]
    mean, scale = standardisation(x_train)
    x_std = (x_train - mean) * scale
    x_validation = (data["validation"]["features"].astype(np.float64) - mean) * scale
    y_validation = data["validation"]["labels"]
    monitored_rows = np.unique(np.linspace(0, len(y_train) - 1, min(len(y_train), MONITOR_ROWS)).astype(int))
    weights = class_weights(y_train, num_classes, settings["class_weighting"])
    width = x_std.shape[1]

    def unpack(theta):
        return {"logits_w": theta[:width * num_classes].reshape(width, num_classes),
                "logits_b": theta[width * num_classes:]}

    def objective(theta):
        loss, grads = forward_backward(unpack(theta), x_std, y_train, weights, settings["l2"], 0.0, None)
        return loss, np.concatenate([grads["logits_w"].ravel(), grads["logits_b"]])

    history = []

    def record(theta):
        standardised = {"mean": 0.0, "scale": 1.0, **unpack(theta)}
        row = [len(history) + 1, *loss_and_accuracy(standardised, x_std[monitored_rows], y_train[monitored_rows]),
               *loss_and_accuracy(standardised, x_validation, y_validation)]
        history.append(row)
        if row[0] % 10 == 0 or row[0] == 1:
            log(f"iteration {row[0]}: train loss {row[1]:.4f} acc {row[2]:.4f}, "
                f"validation loss {row[3]:.4f} acc {row[4]:.4f}")

    result = minimize(objective, np.zeros(width * num_classes + num_classes), jac=True, method="L-BFGS-B",
                      callback=record, options={"maxiter": settings["epochs"]})
    if not history:
        record(result.x)
    log(f"L-BFGS: {result.nit} iterations, {'converged' if result.success else result.message}")
    head = {"mean": mean, "scale": scale, **unpack(result.x)}
    head = {key: np.asarray(value, np.float32) for key, value in head.items()}
    summary = {"epochs_run": len(history), "best_epoch": len(history), "monitored": "train objective (convex)",
               "stopped_early": bool(result.success and len(history) < settings["epochs"])}
    return head, history, summary


def train_minibatch(data, num_classes, settings, log=print):
    """A head with a hidden layer: mini-batches, early stopping on the validation loss.

    Float32 throughout (deterministic, and twice as fast as float64 here); the training
    columns of the history are measured on at most MONITOR_ROWS evenly spaced training rows.
    """
    rng = np.random.default_rng(settings["seed"])
    x_train, y_train = data["train"]["features"].astype(np.float32), data["train"]["labels"]
    mean, scale = standardisation(x_train)
    mean, scale = mean.astype(np.float32), scale.astype(np.float32)
    x_std = (x_train - mean) * scale
    monitored_rows = np.unique(np.linspace(0, len(y_train) - 1, min(len(y_train), MONITOR_ROWS)).astype(int))
    x_validation = (data["validation"]["features"].astype(np.float32) - mean) * scale
    y_validation = data["validation"]["labels"]
    params = {key: value.astype(np.float32) for key, value in
              init_params(rng, x_train.shape[1], settings["hidden_units"], num_classes).items()}
    weights = class_weights(y_train, num_classes, settings["class_weighting"]).astype(np.float32)
    optimizer = Optimizer(settings["optimizer"], settings["learning_rate"])
    monitor = "validation" if len(y_validation) else "train"
    best = {"loss": np.inf, "epoch": 0, "params": None}
    history = []
    progress = Progress("training (at most)", settings["epochs"], unit="epochs")
    for epoch in range(1, settings["epochs"] + 1):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), settings["batch_size"]):
            batch = order[start:start + settings["batch_size"]]
            _, grads = forward_backward(params, x_std[batch], y_train[batch], weights,
                                        settings["l2"], settings["dropout"], rng)
            optimizer.step(params, grads)
        standardised = {"mean": np.float32(0), "scale": np.float32(1), **params}
        row = [epoch, *loss_and_accuracy(standardised, x_std[monitored_rows], y_train[monitored_rows]),
               *loss_and_accuracy(standardised, x_validation, y_validation)]
        history.append(row)
        progress.update()
        monitored_loss = row[3] if monitor == "validation" else row[1]
        if monitored_loss < best["loss"] - 1e-7:
            best = {"loss": monitored_loss, "epoch": epoch, "params": {k: v.copy() for k, v in params.items()}}
        if epoch % 10 == 0 or epoch == 1:
            log(f"epoch {epoch}: train loss {row[1]:.4f} acc {row[2]:.4f}, "
                f"validation loss {row[3]:.4f} acc {row[4]:.4f}")
        if epoch - best["epoch"] >= settings["early_stopping_patience"]:
            log(f"early stop at epoch {epoch}: no better {monitor} loss since epoch {best['epoch']}")
            break
    head = {"mean": mean, "scale": scale, **best["params"]}
    head = {key: value.astype(np.float32) for key, value in head.items()}
    summary = {"epochs_run": len(history), "best_epoch": best["epoch"], "monitored": monitor,
               "stopped_early": len(history) < settings["epochs"]}
    return head, history, summary


def write_tensorboard(folder, history):
    """TensorBoard scalars: Event protos in a TFRecord file (no TensorFlow needed).

    The fixed file name and wall times keep the output reproducible.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    events = [Event(wall_time=0, file_version="brain.Event:2")]
    for row in history:
        values = [Summary.Value(tag=name, simple_value=value) for name, value in zip(HISTORY_COLUMNS[1:], row[1:])]
        events.append(Event(wall_time=row[0], step=row[0], summary=Summary(value=values)))
    with atomic.atomic_dir(folder) as temp:
        records.write_records(os.path.join(temp, "events.out.tfevents.0.retrain"),
                              (event.SerializeToString(deterministic=True) for event in events))


def split_metrics(head, views, labels):
    """Metrics of one split from its view features (view 0 first), averaging the views' probabilities."""
    probs = head_lib.view_probabilities(head, [view["features"] for view in views])
    true = views[0]["labels"]
    metrics = classification_metrics(true, probs.argmax(axis=1), labels)
    metrics["loss"] = head_lib.cross_entropy(probs, true)
    return metrics


def load_split(plain, extra_views):
    """A split's features as a list of views: the plain file, then each extra view, checked to match."""
    return formats.read_views([plain, *extra_views])


def evaluate(head, splits, labels):
    """{split: metrics} for {split: list of views}."""
    return {split: split_metrics(head, views, labels) for split, views in splits.items()}


def resolved_l2(l2, train_path, num_classes):
    """The L2 weight decay: a number, or "auto": a logistic regression's with C=1 (scikit-learn's default).

    That is 1 / (plain training images) on the mean loss; with two classes twice that,
    since a binary logistic regression penalises the one weight vector of the logit
    difference, which a two-class softmax splits in half between its two vectors.
    """
    if l2 != "auto":
        return l2
    images = max(1, len(formats.read_bottlenecks(train_path)["labels"]))
    return (2.0 if num_classes == 2 else 1.0) / images


def training_data(train, augmented):
    """The plain training features with any augmented copies appended."""
    parts = [formats.read_bottlenecks(path) for path in [train, *augmented]]
    return formats.concatenate_bottlenecks(parts)


def run(paths, labels_path, backbone_json, settings, outputs, experiment):
    """Train a head on cached features and write head, history, TensorBoard events and metrics."""
    labels = formats.read_labels(labels_path)
    backbone = atomic.read_json(backbone_json)
    train_data = training_data(paths["train"], paths["augmented"])
    if len(train_data["labels"]) == 0:
        raise PipelineError(f"{paths['train']}: no training images")
    splits = {"validation": load_split(paths["validation"], paths["validation_views"]),
              "test": load_split(paths["test"], paths["test_views"])}
    used = blocks.columns(backbone, settings["train"].get("feature_blocks"))  # the blocks this head reads
    data = {"train": blocks.select(train_data, used), "validation": blocks.select(splits["validation"][0], used)}
    train_settings = {**settings["train"], "l2": resolved_l2(settings["train"]["l2"], paths["train"], len(labels))}
    head, history, summary = train(data, len(labels), train_settings)
    head = blocks.expand_head(head, used, backbone["bottleneck_size"])
    head_lib.save(outputs["head"], head)
    atomic.write_table(outputs["history"], HISTORY_COLUMNS, history)
    write_tensorboard(outputs["tensorboard"], history)
    metrics = metrics_record(experiment, "head", backbone, settings, summary, labels,
                             evaluate(head, {"train": [formats.read_bottlenecks(paths["train"])], **splits}, labels))
    write_test_predictions(outputs["predictions"], head, splits["test"])
    atomic.write_json(outputs["metrics"], metrics)
    return metrics


def write_test_predictions(path, head, views):
    """The trained model's test-split softmax (views averaged): the deployed IRs' reference, and the gallery's."""
    probs = head_lib.view_probabilities(head, [view["features"] for view in views])
    test = views[0]
    formats.write_predictions(path, probs, test["labels"], test["sha256"], test["filenames"])


def metrics_record(experiment, mode, backbone, settings, summary, labels, splits):
    return {
        "schema_version": 2,
        "experiment": experiment,
        "mode": mode,
        "labels": labels,
        "untrained_backbone": backbone["untrained"],
        "note": note(backbone["untrained"]),
        "settings": settings,
        "training": summary,
        "splits": splits,
    }


def score(head_path, labels_path, backbone_json, settings, paths, outputs, experiment, mode, history_csv):
    """metrics.json of a head trained elsewhere (fine-tuning) on its backbone's cached features."""
    head = head_lib.load(head_path)
    labels = formats.read_labels(labels_path)
    splits = {"train": [formats.read_bottlenecks(paths["train"])],
              "validation": load_split(paths["validation"], paths["validation_views"]),
              "test": load_split(paths["test"], paths["test_views"])}
    history = atomic.read_table(history_csv)
    best = min(history, key=lambda row: float(row["validation_loss"])) if history else {"epoch": 0}
    summary = {"epochs_run": len(history), "best_epoch": int(best["epoch"]), "monitored": "validation",
               "stopped_early": False}
    metrics = metrics_record(experiment, mode, atomic.read_json(backbone_json), settings, summary, labels,
                             evaluate(head, splits, labels))
    write_test_predictions(outputs["predictions"], head, splits["test"])
    atomic.write_json(outputs["metrics"], metrics)
    return metrics


def add_feature_arguments(parser):
    parser.add_argument("--train", required=True, help="train.npz (plain features)")
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--validation-views", nargs="*", default=[], help="test-time views of validation, in order")
    parser.add_argument("--test-views", nargs="*", default=[], help="test-time views of test, in order")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--backbone-json", required=True, help="the backbone's description (untrained or not)")
    parser.add_argument("--settings", required=True, help="the experiment's train/augment/preprocess settings, JSON")
    parser.add_argument("--experiment", required=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Retrain the final layer on cached bottlenecks.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="train a head and write it with its history and metrics")
    add_feature_arguments(fit)
    fit.add_argument("--augmented", nargs="*", default=[], help="features of augmented training copies")
    for name in ("head", "history", "tensorboard", "metrics", "predictions"):
        fit.add_argument(f"--output-{name}", required=True)
    scoring = commands.add_parser("score", help="metrics.json of a given head (fine-tuning)")
    add_feature_arguments(scoring)
    scoring.add_argument("--head", required=True)
    scoring.add_argument("--history", required=True, help="the fine-tuning history.csv")
    scoring.add_argument("--mode", required=True)
    scoring.add_argument("--output-metrics", required=True)
    scoring.add_argument("--output-predictions", required=True, help="test_predictions.npz")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    paths = {"train": args.train, "validation": args.validation, "test": args.test,
             "validation_views": args.validation_views, "test_views": args.test_views,
             "augmented": getattr(args, "augmented", [])}
    if args.command == "train":
        names = ("head", "history", "tensorboard", "metrics", "predictions")
        outputs = {name: getattr(args, f"output_{name}") for name in names}
        metrics = run(paths, args.labels, args.backbone_json, settings, outputs, args.experiment)
    else:
        outputs = {"metrics": args.output_metrics, "predictions": args.output_predictions}
        metrics = score(args.head, args.labels, args.backbone_json, settings, paths, outputs, args.experiment,
                        args.mode, args.history)
    for split in ("validation", "test"):
        print(f"{split} accuracy: {metrics['splits'][split]['accuracy']:.4f}{note_suffix(metrics['note'])}")


if __name__ == "__main__":
    run_cli(main)
