"""Retrain the final layer on cached bottlenecks: cross-validated, then refit (docs/selection.md).

Two head kinds (settings train.head), each with its own keys (HEAD_KEYS):
  linear  a softmax layer alone: a multinomial logistic regression solved with L-BFGS;
  mlp     one ReLU hidden layer with dropout, then softmax: mini-batches, early stopping.
The head is trained once per stratified fold of training + validation (the held-out fold
scored as deployed, averaging the test-time views; an MLP stops early on an inner part of
the other folds), then refit on all of training + validation; the MLP's refit runs the
folds' median best epoch. Written in NumPy:
bit-for-bit reproducible on one machine for a given seed; TensorFlow is not needed
(TensorBoard events are written with TensorBoard's own protos).

Outputs: head.npz (the refit head, scripts/core/head.py), history.csv (the first fold's
curves: validated on the held-out fold for a linear head, on the early-stopping part for an MLP), TensorBoard events, metrics.json
(with "cv": the folds' mean, std and values), test_predictions.npz (the refit head's
test-split softmax and per-view logits) and oof_predictions.npz (the out-of-fold logits over
training + validation, per view too: what calibration fits on). Held-out metrics carry bootstrap
intervals (`--evaluation`, docs/clinical.md).

    python -m scripts.model.retrain train --train T --validation V --test X --labels L \
        --backbone-json B --settings JSON --experiment NAME --output-head H --output-history C \
        --output-tensorboard D --output-metrics M --output-predictions P --output-oof O [--manifest M]
    python -m scripts.model.retrain score ... --head H --history C --mode finetune --output-metrics M
"""
import argparse
import json
import os

import numpy as np

from scripts.core import atomic, blocks, crossval, formats, records
from scripts.core import head as head_lib
from scripts.core.contract import note, note_suffix
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import evaluation_metrics
from scripts.core.progress import Progress

MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
# Training rows the per-epoch training loss and accuracy are measured on (evenly spaced).
MONITOR_ROWS = 4096
# A feature whose std is below this fraction of the median std is treated as constant.
CONSTANT_FEATURE_STD = 1e-3
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy"]
# The keys each head kind reads (config train.<kind>); the job's settings carry exactly these.
HEAD_KEYS = {
    "linear": {"l2", "class_weighting", "max_iterations"},
    "mlp": {"hidden_units", "dropout", "optimizer", "learning_rate", "epochs", "batch_size", "l2",
            "class_weighting", "patience", "seed"},
}


def check_head_settings(train_settings):
    """PipelineError unless the settings name a head kind and carry exactly its keys."""
    kind = train_settings.get("head")
    if kind not in HEAD_KEYS:
        raise PipelineError(f"settings train.head: {kind!r} is not one of {', '.join(HEAD_KEYS)}")
    keys = set(train_settings) - {"head", "feature_blocks"}  # the blocks a head reads: any kind
    for problem, names in (("missing", HEAD_KEYS[kind] - keys), ("not read by this head kind", keys - HEAD_KEYS[kind])):
        if names:
            raise PipelineError(f"settings train ({kind} head): {problem}: {', '.join(sorted(names))}")


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

    A linear head (a softmax layer alone) is a convex problem: it is solved to convergence
    with L-BFGS, exactly a multinomial logistic regression (with `l2: auto`, scikit-learn's
    C=1). An MLP is trained with mini-batches and early stopping on the validation loss
    (with no validation rows: for exactly ``epochs`` epochs, keeping the last).
    """
    if settings["head"] == "linear":
        return train_linear(data, num_classes, settings, log)
    return train_minibatch(data, num_classes, settings, log)


def train_linear(data, num_classes, settings, log=print):
    """The softmax layer by L-BFGS on the regularised, weighted cross-entropy; at most ``max_iterations``."""
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
                      callback=record, options={"maxiter": settings["max_iterations"]})
    if not history:
        record(result.x)
    log(f"L-BFGS: {result.nit} iterations, {'converged' if result.success else result.message}")
    head = {"mean": mean, "scale": scale, **unpack(result.x)}
    head = {key: np.asarray(value, np.float32) for key, value in head.items()}
    summary = {"epochs_run": len(history), "best_epoch": len(history), "monitored": "train objective (convex)",
               "stopped_early": bool(result.success and len(history) < settings["max_iterations"])}
    return head, history, summary


def train_minibatch(data, num_classes, settings, log=print):
    """A head with a hidden layer: mini-batches, early stopping on the validation loss.

    Without validation rows (the refit) it runs all ``epochs`` and keeps the last.
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
    monitor = "validation" if len(y_validation) else "fixed epochs"
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
        monitored_loss = row[3] if monitor == "validation" else -epoch  # no validation: the last epoch
        if monitored_loss < best["loss"] - 1e-7:
            best = {"loss": monitored_loss, "epoch": epoch, "params": {k: v.copy() for k, v in params.items()}}
        if epoch % 10 == 0 or epoch == 1:
            log(f"epoch {epoch}: train loss {row[1]:.4f} acc {row[2]:.4f}, "
                f"validation loss {row[3]:.4f} acc {row[4]:.4f}")
        if epoch - best["epoch"] >= settings["patience"]:
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


def split_metrics(head, views, labels, evaluation=None, intervals=False):
    """Metrics of one split from its view features (view 0 first), averaging the views' probabilities."""
    probs = head_lib.view_probabilities(head, [view["features"] for view in views])
    true = views[0]["labels"]
    metrics = evaluation_metrics(true, probs, labels, evaluation, intervals)
    metrics["loss"] = head_lib.cross_entropy(probs, true)
    return metrics


def narrowed(views, used):
    """A split's views with only the ``used`` feature columns (scripts/core/blocks.py)."""
    return [blocks.select(view, used) for view in views]


def load_split(plain, extra_views):
    """A split's features as a list of views: the plain file, then each extra view, checked to match."""
    return formats.read_views([plain, *extra_views])


def evaluate(head, splits, labels, evaluation=None):
    """{split: metrics} for {split: list of views}; bootstrap intervals on the held-out splits."""
    return {split: split_metrics(head, views, labels, evaluation, split != "train") for split, views in splits.items()}


def resolved_l2(l2, images, num_classes):
    """The L2 weight decay: a number, or "auto": a logistic regression's with C=1 (scikit-learn's default).

    That is 1 / (plain training images of this fit) on the mean loss; with two classes twice
    that, since a binary logistic regression penalises the one weight vector of the logit
    difference, which a two-class softmax splits in half between its two vectors.
    """
    if l2 != "auto":
        return l2
    return (2.0 if num_classes == 2 else 1.0) / max(1, images)


def pooled(train_views, validation_views):
    """Training + validation as one set: a list of views (each a bottleneck dict) and the split of each row."""
    views = [formats.concatenate_bottlenecks([train, validation])
             for train, validation in zip(train_views, validation_views)]
    splits = np.array(["train"] * len(train_views[0]["labels"]) + ["validation"] * len(validation_views[0]["labels"]))
    return views, splits


def manifest_groups(manifest_path, hashes):
    """Each image's group from the manifest's optional `group` column (None without one).

    An image with an empty group is a group of its own.
    """
    if not manifest_path:
        return None
    rows = atomic.read_table(manifest_path)
    if not rows or "group" not in rows[0]:
        return None
    group_of = {row["sha256"]: row["group"] for row in rows}
    missing = [sha for sha in hashes if sha not in group_of]
    if missing:
        raise PipelineError(f"{manifest_path}: does not list the image with sha256 {missing[0]}")
    return np.array([group_of[sha] or f"sha256:{sha}" for sha in hashes])


def fit(views, rows, augmented, validation_rows, num_classes, settings, log):
    """Train a head on ``rows`` of the pooled plain view (and their augmented copies), validating on ``validation_rows``."""
    plain = views[0]
    parts = [{key: value[rows] for key, value in plain.items()}]
    if augmented is not None:
        copies = np.isin(augmented["sha256"], plain["sha256"][rows])
        parts.append({key: value[copies] for key, value in augmented.items()})
    data = {"train": formats.concatenate_bottlenecks(parts),
            "validation": {key: value[validation_rows] for key, value in plain.items()}}
    train_settings = {**settings, "l2": resolved_l2(settings["l2"], len(rows), num_classes)}
    return train(data, num_classes, train_settings, log)


def cross_validate(views, augmented, num_classes, settings, folds_requested, groups, log=print):
    """Out-of-fold probabilities [N, classes] (views averaged) and logits [views, N, classes], the fold of each
    row, and each fold's training."""
    labels = views[0]["labels"]
    assignment = crossval.fold_assignment(labels, folds_requested, groups)
    folds = int(assignment.max()) + 1
    probabilities = np.zeros((len(labels), num_classes), np.float64)
    view_logits = np.zeros((len(views), len(labels), num_classes), np.float64)
    trainings = []
    for fold in range(folds):
        held_out, rows = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        # A linear head never looks at its validation rows (they only fill history.csv); an MLP stops
        # early on an inner part of the training folds, so the held-out fold stays unseen.
        rows, watched = (early_stopping_split(rows, labels, groups, folds) if settings["head"] == "mlp"
                         else (rows, held_out))
        log(f"fold {fold + 1}/{folds}: {len(rows)} images to train on, {len(held_out)} held out"
            + (f", {len(watched)} for early stopping" if settings["head"] == "mlp" else ""))
        head, history, summary = fit(views, rows, augmented, watched, num_classes, settings, log)
        held_out_views = [view["features"][held_out] for view in views]
        probabilities[held_out] = head_lib.view_probabilities(head, held_out_views)
        view_logits[:, held_out] = head_lib.view_logits(head, held_out_views)
        trainings.append({"history": history, "summary": summary})
    return probabilities, view_logits, assignment, trainings


def early_stopping_split(rows, labels, groups, folds):
    """(rows to train on, rows to stop early on): one inner stratified fold of a fold's training rows."""
    inner = crossval.fold_assignment(labels[rows], max(2, folds - 1), None if groups is None else groups[rows])
    return rows[inner != 0], rows[inner == 0]


def refit_settings(settings, trainings):
    """The refit's settings: an MLP runs the folds' median best epoch (no part left to stop on)."""
    if settings["head"] != "mlp":
        return settings
    best_epochs = [training["summary"]["best_epoch"] for training in trainings]
    return {**settings, "epochs": max(1, int(round(float(np.median(best_epochs)))))}


def cv_record(labels, probabilities, assignment, groups, num_classes, trainings):
    """metrics.json's "cv": every selection metric's mean, std and per-fold values, and how the folds were made."""
    per_fold = [crossval.fold_metrics(labels[assignment == fold], probabilities[assignment == fold], num_classes)
                for fold in range(int(assignment.max()) + 1)]
    return {"folds": len(per_fold), "images": int(len(labels)), "grouped": groups is not None,
            "groups": int(len(np.unique(groups))) if groups is not None else None,
            "best_epochs": [training["summary"]["best_epoch"] for training in trainings],
            **crossval.summarise(per_fold)}


def write_oof_predictions(path, probabilities, view_logits, views, assignment, splits):
    """oof_predictions.npz: out-of-fold logits (log of the view-averaged softmax) and each view's logits
    [views, N, classes], labels, paths, folds, splits."""
    plain = views[0]
    formats.write_npz(path, logits=np.log(np.clip(probabilities, 1e-30, 1.0)).astype(np.float32),
                      view_logits=np.asarray(view_logits, np.float32),
                      labels=np.asarray(plain["labels"], np.int64), paths=np.asarray(plain["filenames"], dtype=str),
                      sha256=np.asarray(plain["sha256"], dtype=str), folds=np.asarray(assignment, np.int64),
                      splits=np.asarray(splits, dtype=str))


def out_of_fold_metrics(probabilities, views, rows, labels, evaluation=None):
    """A split's metrics from the out-of-fold probabilities of its rows (each from a head that did not see it)."""
    true = views[0]["labels"][rows]
    metrics = evaluation_metrics(true, probabilities[rows], labels, evaluation)
    metrics["loss"] = head_lib.cross_entropy(probabilities[rows], true)
    metrics["out_of_fold"] = True
    return metrics


def run(paths, labels_path, backbone_json, settings, outputs, experiment, evaluation=None):
    """Cross-validate a head over training + validation, refit it on both; write the head and its records."""
    labels = formats.read_labels(labels_path)
    backbone = atomic.read_json(backbone_json)
    check_head_settings(settings["train"])
    train_views = load_split(paths["train"], paths["train_views"])
    if len(train_views[0]["labels"]) == 0:
        raise PipelineError(f"{paths['train']}: no training images")
    if len(paths["train_views"]) != len(paths["validation_views"]):
        raise PipelineError("retrain: train and validation need the same test-time views "
                            f"({len(paths['train_views'])} and {len(paths['validation_views'])} given)")
    used = blocks.columns(backbone, settings["train"].get("feature_blocks"))  # the blocks this head reads
    train_views = narrowed(train_views, used)
    views, splits = pooled(train_views,
                           narrowed(load_split(paths["validation"], paths["validation_views"]), used))
    test = narrowed(load_split(paths["test"], paths["test_views"]), used)
    augmented = blocks.select(training_data(paths["augmented"]), used) if paths["augmented"] else None
    groups = manifest_groups(paths.get("manifest"), views[0]["sha256"])
    head_settings = settings["train"]
    probabilities, oof_view_logits, assignment, trainings = cross_validate(views, augmented, len(labels), head_settings,
                                                          settings["selection"]["folds"], groups)
    everything = np.arange(len(splits))
    print(f"refit on all {len(everything)} training + validation images")
    head, _, summary = fit(views, everything, augmented, everything[:0], len(labels),
                           refit_settings(head_settings, trainings), print)
    history = trainings[0]["history"]
    # Saved for all the backbone's columns (zero weights on blocks it does not use).
    head_lib.save(outputs["head"], blocks.expand_head(head, used, backbone.get("bottleneck_size")))
    atomic.write_table(outputs["history"], HISTORY_COLUMNS, history)
    write_tensorboard(outputs["tensorboard"], history)
    write_oof_predictions(outputs["oof"], probabilities, oof_view_logits, views, assignment, splits)
    evaluated = evaluate(head, {"train": train_views, "test": test}, labels, evaluation)
    validation_rows = np.flatnonzero(splits == "validation")
    evaluated = {"train": evaluated["train"],
                 "validation": out_of_fold_metrics(probabilities, views, validation_rows, labels, evaluation),
                 "test": evaluated["test"]}
    metrics = metrics_record(experiment, "head", backbone, settings, summary, labels, evaluated)
    metrics["cv"] = cv_record(views[0]["labels"], probabilities, assignment, groups, len(labels), trainings)
    write_test_predictions(outputs["predictions"], head, test)
    atomic.write_json(outputs["metrics"], metrics)
    return metrics


def training_data(paths):
    """Feature files (augmented training copies) as one bottleneck dict, in order."""
    return formats.concatenate_bottlenecks([formats.read_bottlenecks(path) for path in paths])


def write_test_predictions(path, head, views):
    """The trained model's test-split softmax (views averaged) and per-view logits: the deployed IRs' reference."""
    probs = head_lib.view_probabilities(head, [view["features"] for view in views])
    test = views[0]
    formats.write_predictions(path, probs, test["labels"], test["sha256"], test["filenames"],
                              view_logits=head_lib.view_logits(head, [view["features"] for view in views]))


def write_held_out_predictions(path, head, views):
    """oof_predictions.npz from the validation split (the contract of docs/clinical.md): logits of view 0,
    per-view logits, labels, paths, folds (0) and splits ("validation")."""
    if not path:
        return
    held_out = views[0]
    view_logits = head_lib.view_logits(head, [view["features"] for view in views]).astype(np.float32)
    count = len(held_out["labels"])
    formats.write_npz(path, logits=view_logits[0], view_logits=view_logits,
                      labels=np.asarray(held_out["labels"], np.int64), paths=np.asarray(held_out["filenames"], str),
                      folds=np.zeros(count, np.int64), splits=np.full(count, "validation"))


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


def score(head_path, labels_path, backbone_json, settings, paths, outputs, experiment, mode, history_csv,
          evaluation=None):
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
                             evaluate(head, splits, labels, evaluation))
    write_test_predictions(outputs["predictions"], head, splits["test"])
    write_held_out_predictions(outputs.get("oof"), head, splits["validation"])
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
    parser.add_argument("--evaluation", required=True,
                        help="JSON: positive_classes, bootstrap_samples, seed (metrics' binary view and intervals)")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Retrain the final layer on cached bottlenecks.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="train a head and write it with its history and metrics")
    add_feature_arguments(fit)
    fit.add_argument("--augmented", nargs="*", default=[], help="features of augmented training copies")
    fit.add_argument("--train-views", nargs="*", default=[], help="test-time views of train, in order")
    fit.add_argument("--manifest", help="manifest.tsv: its optional `group` column keeps groups in one fold")
    for name in ("head", "history", "tensorboard", "metrics", "predictions", "oof"):
        fit.add_argument(f"--output-{name}", required=True)
    scoring = commands.add_parser("score", help="metrics.json of a given head (fine-tuning)")
    add_feature_arguments(scoring)
    scoring.add_argument("--head", required=True)
    scoring.add_argument("--history", required=True, help="the fine-tuning history.csv")
    scoring.add_argument("--mode", required=True)
    scoring.add_argument("--output-metrics", required=True)
    scoring.add_argument("--output-predictions", required=True, help="test_predictions.npz")
    scoring.add_argument("--output-oof", required=True,
                         help="oof_predictions.npz: the validation split's logits, which calibration fits on")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    paths = {"train": args.train, "validation": args.validation, "test": args.test,
             "validation_views": args.validation_views, "test_views": args.test_views,
             "augmented": getattr(args, "augmented", []), "train_views": getattr(args, "train_views", []),
             "manifest": getattr(args, "manifest", None)}
    if args.command == "train":
        names = ("head", "history", "tensorboard", "metrics", "predictions", "oof")
        outputs = {name: getattr(args, f"output_{name}") for name in names}
        metrics = run(paths, args.labels, args.backbone_json, settings, outputs, args.experiment,
                      json.loads(args.evaluation))
    else:
        outputs = {"metrics": args.output_metrics, "predictions": args.output_predictions, "oof": args.output_oof}
        metrics = score(args.head, args.labels, args.backbone_json, settings, paths, outputs, args.experiment,
                        args.mode, args.history, json.loads(args.evaluation))
    if "cv" in metrics:
        cv = metrics["cv"]["accuracy"]
        print(f"cross-validated accuracy ({metrics['cv']['folds']} folds): {cv['mean']:.4f} +- {cv['std']:.4f}")
    for split in ("validation", "test"):
        print(f"{split} accuracy: {metrics['splits'][split]['accuracy']:.4f}{note_suffix(metrics['note'])}")


if __name__ == "__main__":
    run_cli(main)
