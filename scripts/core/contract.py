"""A model's description beside it, and the note every artifact of an untrained backbone carries.

backbone.json (the cut backbone), model.json (the frozen model, scripts/core/model_contract.py)
and ir.json (an OpenVINO IR) each hold a ``preprocessing`` contract (scripts/core/images.py),
the labels where there are classes, and ``untrained_backbone`` / ``note``. This module does
not depend on the preprocessing, so the stages that only carry the note (the backbone, the
heads) do not rerun when the preprocessing code changes. A deployed
model's also hold its ``calibration`` (the temperature), ``operating_point`` and
``low_confidence`` thresholds, from calibration.json (docs/clinical.md).
"""
import os

from scripts.core import atomic
from scripts.core.errors import PipelineError

UNTRAINED_NOTE = "untrained backbone"


def note(untrained):
    """The note for an artifact made from an untrained (randomly initialised) backbone, else ""."""
    return UNTRAINED_NOTE if untrained else ""


def note_suffix(text):
    """The note in parentheses for titles and printed summaries, e.g. " (untrained backbone)"."""
    return f" ({text})" if text else ""


def read_description(path):
    """A model's JSON description, or one line saying it is missing."""
    if not os.path.isfile(path):
        raise PipelineError(f"{path}: missing (the model's description, written beside it)")
    return atomic.read_json(path)


def deployment_fields(calibration_json):
    """The temperature, operating point and low-confidence threshold of calibration.json (identity without one)."""
    if not calibration_json:
        return {"calibration": {"temperature": 1.0}, "operating_point": None, "low_confidence": None}
    record = read_description(calibration_json)
    point, confidence = record.get("operating_point"), record.get("low_confidence")
    return {"calibration": {"temperature": float(record["temperature"]), "method": "temperature scaling"},
            "operating_point": None if point is None else {
                key: point[key] for key in ("positive_classes", "target_sensitivity", "threshold")},
            "low_confidence": None if confidence is None else {
                key: confidence[key] for key in ("target_accuracy", "threshold")}}
