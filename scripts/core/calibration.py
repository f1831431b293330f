"""Temperature scaling, the operating point and the low-confidence threshold, all chosen on held-out data.

Temperature: one scalar T > 0 dividing the head's logits before the softmax, the one
minimising the log loss (cross-entropy) of the held-out predictions. With test-time
views the calibrated probability of an image is the mean over its views of
softmax(logits_view / T), exactly what the frozen model and the IRs compute.

Operating point: with a positive set of classes, the decision is "positive" when the
positive-set probability (the sum of those classes' calibrated probabilities) is at
least ``threshold``; the threshold is the largest value whose held-out sensitivity is
at least the target sensitivity.

Low confidence: a prediction is ``low_confidence`` when its top calibrated probability is
below ``threshold``: the lowest top probability such that the held-out images at or
above it are classified with at least the target accuracy (so the confident set is as
large as it can be while meeting the target).
"""
import numpy as np
from scipy.optimize import minimize_scalar

from scripts.core import head as head_lib

# The temperature is searched over log T in [log LOW, log HIGH].
TEMPERATURE_RANGE = (0.05, 20.0)


def as_views(logits):
    """Logits [N, C] or per-view logits [V, N, C], as [V, N, C]."""
    logits = np.asarray(logits, np.float64)
    return logits[None] if logits.ndim == 2 else logits


def calibrated_probabilities(logits, temperature):
    """Mean over views of softmax(logits / T); ``logits`` [N, C] or [V, N, C]."""
    return np.mean([head_lib.softmax(view / temperature) for view in as_views(logits)], axis=0)


def log_loss(logits, labels, temperature):
    probs = calibrated_probabilities(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None))))


def fit_temperature(logits, labels):
    """The temperature minimising the held-out log loss (1.0 with no held-out images)."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(lambda log_t: log_loss(logits, labels, np.exp(log_t)), bounds=(low, high),
                             method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def sensitivity_threshold(score, is_positive, target):
    """The largest threshold t with held-out sensitivity (score >= t among positives) >= target."""
    positives = np.sort(np.asarray(score, np.float64)[np.asarray(is_positive, bool)])[::-1]
    if len(positives) == 0:
        return None
    needed = int(np.ceil(target * len(positives) - 1e-9))
    return float(positives[max(needed, 1) - 1])


def confidence_threshold(probabilities, labels, target_accuracy):
    """The lowest top probability c with accuracy >= target among the held-out images of top probability >= c.

    1.0 (every prediction low-confidence) when no such c exists.
    """
    probabilities = np.asarray(probabilities, np.float64)
    if len(labels) == 0:
        return 1.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    accuracy = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    # Only the last image of a run of equal confidences closes a set "confidence >= c".
    closes = np.append(confidence[1:] < confidence[:-1], True)
    qualifying = np.flatnonzero(closes & (accuracy >= target_accuracy))
    return float(confidence[qualifying[-1]]) if len(qualifying) else 1.0


def confident_figures(probabilities, labels, threshold):
    """Coverage (share not low-confidence) and the accuracy of the confident and low-confidence images."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    confident = probabilities.max(axis=1) >= threshold
    correct = probabilities.argmax(axis=1) == labels

    def share(mask):
        return float(correct[mask].mean()) if mask.any() else None
    return {"n": int(len(labels)), "low_confidence": int((~confident).sum()),
            "coverage": float(confident.mean()) if len(labels) else None,
            "confident_accuracy": share(confident), "low_confidence_accuracy": share(~confident)}
