"""What a served prediction reports beside the probabilities: the decision and ``low_confidence``.

The deployed IR already outputs calibrated probabilities (a temperature, where one was
fitted, is inside the model). The operating point travels with the model: a decision
threshold on the summed probability of the positive classes and a low-confidence
threshold on the top probability. They are read from the model's description (ir.json)
or its rt_info ``deployment`` section; where none is recorded, each is reported as None
and the decision is the top label.

Keys read, as scripts/deploy/ir.py writes them into ir.json and rt_info (docs/clinical.md):
    temperature                 calibration.temperature
    decision threshold          operating_point.threshold
    positive classes            operating_point.positive_classes
    low-confidence threshold    low_confidence.threshold
"""
import json

import numpy as np

KEYS = {
    "temperature": (("calibration", "temperature"),),
    "decision_threshold": (("operating_point", "threshold"),),
    "positive_classes": (("operating_point", "positive_classes"),),
    "low_confidence_threshold": (("low_confidence", "threshold"),),
}


def _parsed(value):
    """rt_info values are strings: JSON ones become what they hold."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _lookup(source, path):
    value = source
    for key in path:
        value = _parsed(value)
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return _parsed(value)


def read(description, rt_info=None):
    """{temperature, decision_threshold, positive_classes, low_confidence_threshold}; None where absent."""
    point = {}
    for name, paths in KEYS.items():
        found = None
        for source in (description or {}, rt_info or {}):
            found = next((value for path in paths if (value := _lookup(source, path)) is not None), None)
            if found is not None:
                break
        point[name] = found
    for name in ("temperature", "decision_threshold", "low_confidence_threshold"):
        if point[name] is not None:
            point[name] = float(point[name])
    return point


def rt_info_section(model, section="deployment"):
    """The IR's rt_info section as {key: string}, or {} where it has none."""
    if not model.has_rt_info([section]):
        return {}
    values = model.get_rt_info([section]).astype(dict)
    return {key: value.astype(str) if hasattr(value, "astype") else str(value) for key, value in values.items()}


def decide(probabilities, labels, point):
    """The served result of one image's probabilities [classes]."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")
    top = float(probabilities[order[0]])
    result = {
        "label": labels[order[0]],
        "probabilities": {label: float(value) for label, value in zip(labels, probabilities)},
        "decision": labels[order[0]],
        "positive_probability": None,
        "decision_threshold": point["decision_threshold"],
        "low_confidence": None if point["low_confidence_threshold"] is None else top < point["low_confidence_threshold"],
        "low_confidence_threshold": point["low_confidence_threshold"],
        "temperature": point["temperature"],
    }
    positives = point["positive_classes"]
    if point["decision_threshold"] is not None and positives:
        positive = float(sum(probabilities[labels.index(name)] for name in positives if name in labels))
        result["positive_probability"] = positive
        result["decision"] = "positive" if positive >= point["decision_threshold"] else "negative"
    return result
