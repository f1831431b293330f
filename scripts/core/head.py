"""The retrained head: optional ReLU hidden layer, then softmax, on standardised bottlenecks.

A head is a dict of numpy arrays (saved as head.npz):
    mean, scale          feature standardisation from the training set
    hidden_w, hidden_b   present only when hidden_units > 0
    logits_w, logits_b
The same arithmetic is written in NumPy here, as TensorFlow ops in scripts/model/freeze.py
and as OpenVINO ops in scripts/deploy/ir.py. With test-time views, the probabilities of
an image are the mean over its views' probabilities.
"""
import numpy as np

from scripts.core import formats


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def hidden_activations(head, features):
    standardised = (features - head["mean"]) * head["scale"]
    if "hidden_w" not in head:
        return standardised
    return np.maximum(standardised @ head["hidden_w"] + head["hidden_b"], 0.0)


def probabilities(head, features):
    """Class probabilities [N, classes] for bottleneck features [N, D]."""
    return softmax(hidden_activations(head, features) @ head["logits_w"] + head["logits_b"])


def view_probabilities(head, view_features):
    """Class probabilities [N, classes] averaged over views: ``view_features`` is a list of [N, D]."""
    return np.mean([probabilities(head, features) for features in view_features], axis=0)


def cross_entropy(probs, labels):
    if len(labels) == 0:
        return float("nan")
    return float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())


def save(path, head):
    formats.write_npz(path, **head)


def load(path):
    return formats.read_npz(path)
