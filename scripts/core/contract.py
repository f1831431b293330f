"""The model contract: how a model is fed, and the note every artifact of an untrained backbone carries.

backbone.json (the cut backbone), model.json (the frozen model) and ir.json (an
OpenVINO IR) each hold a ``preprocessing`` contract (scripts/core/images.py), the
labels where there are classes, and ``untrained_backbone`` / ``note``.
"""
import os

from scripts.core import atomic
from scripts.core.errors import PipelineError
from scripts.core.images import preprocessing_contract

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


def model_contract(info, labels, central_fraction, resize, views, hidden_units):
    """model.json: how to feed the frozen model and what it returns."""
    return {
        "schema_version": 2,
        "input_node": "input",
        "output_node": "final_result",
        "output": "float32 [N, classes] softmax probabilities, classes in `labels` order",
        "preprocessing": preprocessing_contract(info["input_size"], info["input_range"],
                                                       central_fraction, resize),
        "test_time_views": list(views),
        "labels": labels,
        "backbone": info,
        "hidden_units": hidden_units,
        "untrained_backbone": info["untrained"],
        "note": info["note"],
    }
