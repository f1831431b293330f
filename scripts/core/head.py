"""The retrained head: optional ReLU hidden layer, then softmax, on standardised bottlenecks.

A head is a dict of numpy arrays (saved as head.npz):
    mean, scale          feature standardisation from the training set
    hidden_w, hidden_b   present only when hidden_units > 0
    logits_w, logits_b
The same arithmetic is written in NumPy here and as TensorFlow ops in scripts/freeze.py.
"""
import numpy as np


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


def save(path, head):
    from scripts.core import atomic
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, **head)


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
