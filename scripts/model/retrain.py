"""Retrain the final layer on cached bottlenecks, with validation-based early stopping.

Written in NumPy: a softmax layer (optionally after one ReLU hidden layer with dropout)
is small enough that plain mini-batch training is fast, and it is bit-for-bit
reproducible on one machine for a given seed. TensorFlow is used only to write the
TensorBoard event files.

Outputs: head.npz (scripts/head.py), history.csv, TensorBoard events, metrics.json.

    python -m scripts.retrain --bottlenecks-dir D --labels L --settings JSON --out-dir O
"""
import argparse
import json
import os

import numpy as np

from scripts import atomic, head as head_lib
from scripts.bottlenecks import load_bottlenecks
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import classification_metrics

MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
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
            mask = (rng.random(activations.shape) >= dropout) / (1.0 - dropout)
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
    loss = -np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()
    return float(loss), float((probs.argmax(axis=1) == labels).mean())


def standardisation(features):
    mean = features.mean(axis=0)
    scale = 1.0 / np.maximum(features.std(axis=0), 1e-6)
    return mean, scale


def train(data, num_classes, settings, log=print):
    """Train a head; returns (head, history rows, summary)."""
    rng = np.random.default_rng(settings["seed"])
    x_train, y_train = data["train"]["features"].astype(np.float64), data["train"]["labels"]
    mean, scale = standardisation(x_train)
    x_std = (x_train - mean) * scale
    params = init_params(rng, x_train.shape[1], settings["hidden_units"], num_classes)
    weights = class_weights(y_train, num_classes, settings["class_weighting"])
    optimizer = Optimizer(settings["optimizer"], settings["learning_rate"])
    monitor = "validation" if len(data["validation"]["labels"]) else "train"
    best = {"loss": np.inf, "epoch": 0, "params": None}
    history = []
    for epoch in range(1, settings["epochs"] + 1):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), settings["batch_size"]):
            batch = order[start:start + settings["batch_size"]]
            _, grads = forward_backward(params, x_std[batch], y_train[batch], weights,
                                        settings["l2"], settings["dropout"], rng)
            optimizer.step(params, grads)
        head = {"mean": mean, "scale": scale, **params}
        row = [epoch, *loss_and_accuracy(head, x_train, y_train),
               *loss_and_accuracy(head, data["validation"]["features"], data["validation"]["labels"])]
        history.append(row)
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
    """TensorBoard scalars, written as Event protos in a TFRecord file.

    Writing the protos directly works whether or not eager execution is on, and the
    fixed file name and wall times keep the output reproducible.
    """
    import tensorflow as tf
    from tensorflow.core.framework.summary_pb2 import Summary
    from tensorflow.core.util.event_pb2 import Event
    with atomic.atomic_dir(folder) as temp:
        with tf.io.TFRecordWriter(os.path.join(temp, "events.out.tfevents.0.retrain")) as writer:
            writer.write(Event(wall_time=0, file_version="brain.Event:2").SerializeToString())
            for row in history:
                values = [Summary.Value(tag=name, simple_value=value)
                          for name, value in zip(HISTORY_COLUMNS[1:], row[1:])]
                event = Event(wall_time=row[0], step=row[0], summary=Summary(value=values))
                writer.write(event.SerializeToString())


def evaluate(head, data, labels):
    results = {}
    for split in ("train", "validation", "test"):
        probs = head_lib.probabilities(head, data[split]["features"])
        results[split] = classification_metrics(data[split]["labels"], probs.argmax(axis=1), labels)
    return results


def read_labels(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def run(bottlenecks_dir, labels_path, settings, out_dir, experiment, untrained):
    labels = read_labels(labels_path)
    data = {split: load_bottlenecks(os.path.join(bottlenecks_dir, f"{split}.npz"))
            for split in ("train", "validation", "test")}
    if len(data["train"]["labels"]) == 0:
        raise PipelineError(f"{bottlenecks_dir}/train.npz: no training images")
    head, history, summary = train(data, len(labels), settings)
    head_lib.save(os.path.join(out_dir, "head.npz"), head)
    atomic.write_table(os.path.join(out_dir, "history.csv"), HISTORY_COLUMNS, history)
    write_tensorboard(os.path.join(out_dir, "tensorboard"), history)
    metrics = {
        "schema_version": 1,
        "experiment": experiment,
        "untrained_backbone": untrained,
        "note": "untrained backbone" if untrained else "",
        "settings": settings,
        "training": summary,
        "splits": evaluate(head, data, labels),
    }
    atomic.write_json(os.path.join(out_dir, "metrics.json"), metrics)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description="Retrain the final layer on cached bottlenecks.")
    parser.add_argument("--bottlenecks-dir", required=True, help="folder with train/validation/test.npz")
    parser.add_argument("--labels", required=True, help="labels.txt (line number = label id)")
    parser.add_argument("--settings", required=True, help="the `train` config section as JSON")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--untrained", action="store_true", help="the backbone is untrained")
    args = parser.parse_args(argv)
    metrics = run(args.bottlenecks_dir, args.labels, json.loads(args.settings), args.out_dir,
                  args.experiment, args.untrained)
    note = " (untrained backbone)" if args.untrained else ""
    for split in ("validation", "test"):
        print(f"{split} accuracy: {metrics['splits'][split]['accuracy']:.4f}{note}")


if __name__ == "__main__":
    run_cli(main)
