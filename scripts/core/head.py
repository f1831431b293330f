"""The retrained head: optional ReLU hidden layer, then softmax, on standardised bottlenecks.

A head is a dict of numpy arrays (saved as head.npz):
    mean, scale          feature standardisation from the training set
    hidden_w, hidden_b   present only when hidden_units > 0
    logits_w, logits_b
The same arithmetic is written in NumPy here, as TensorFlow ops in tf_logits (used by
freeze and fine-tuning) and as OpenVINO ops in scripts/deploy/ir.py. With test-time views,
the probabilities of an image are the mean over its views' probabilities. A deployed model
divides the logits by its calibration temperature before the softmax (scripts/core/calibration.py).
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


def logits(head, features):
    """The head's logits [N, classes] for bottleneck features [N, D]."""
    return hidden_activations(head, features) @ head["logits_w"] + head["logits_b"]


def tf_logits(tf, features, head, weights=None):
    """The head's logits as TensorFlow ops on features [N, D].

    ``weights``: tensors for hidden_w, hidden_b, logits_w, logits_b (e.g. the variables
    fine-tuning trains); by default the head's arrays as constants. mean and scale are
    always constants (a feature constant in training has scale 0: no input, no gradient).
    """
    weights = weights or {key: tf.constant(head[key]) for key in ("hidden_w", "hidden_b", "logits_w", "logits_b")
                          if key in head}
    x = (features - tf.constant(head["mean"])) * tf.constant(head["scale"])
    if "hidden_w" in weights:
        x = tf.nn.relu(tf.matmul(x, weights["hidden_w"]) + weights["hidden_b"])
    return tf.matmul(x, weights["logits_w"]) + weights["logits_b"]


def probabilities(head, features, temperature=1.0):
    """Class probabilities [N, classes] for bottleneck features [N, D]: softmax(logits / temperature)."""
    values = logits(head, features)
    return softmax(values if temperature == 1.0 else values / np.float32(temperature))


def view_probabilities(head, view_features, temperature=1.0):
    """Class probabilities [N, classes] averaged over views: ``view_features`` is a list of [N, D]."""
    return np.mean([probabilities(head, features, temperature) for features in view_features], axis=0)


def view_logits(head, view_features):
    """The logits of every view, [views, N, classes]."""
    return np.stack([logits(head, features) for features in view_features])


def cross_entropy(probs, labels):
    if len(labels) == 0:
        return float("nan")
    return float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())


def save(path, head):
    formats.write_npz(path, **head)


def load(path):
    return formats.read_npz(path)
