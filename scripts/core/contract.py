"""A model's description beside it, and the note every artifact of an untrained backbone carries.

backbone.json (the cut backbone), model.json (the frozen model, scripts/core/model_contract.py)
and ir.json (an OpenVINO IR) each hold a ``preprocessing`` contract (scripts/core/images.py),
the labels where there are classes, and ``untrained_backbone`` / ``note``. This module does
not depend on the preprocessing, so the stages that only carry the note (the backbone, the
heads) do not rerun when the preprocessing code changes.
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
