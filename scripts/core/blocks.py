"""Feature blocks: the columns of the feature vector a head uses (config ``train.feature_blocks``).

A backbone computes every block it lists in backbone.json (``feature_blocks``: name, width,
offset) once, side by side; a head may be trained on some of them (e.g. Inception V3's
``mixed_7`` alone, ``mixed_8`` alone, or both: a sweep over this key lets the selection
choose the cut). The head saved for deployment is expanded back to the full width with a
zero standardisation scale and zero weights on the unused columns, so that it computes
exactly what the narrow head computed, and freezing, the IRs, their evaluation and
fine-tuning take it as any other head. (The deployed model still computes every block;
a block below the one used, as mixed_7 for mixed_8, is computed anyway.)
"""
import numpy as np

from scripts.core.errors import PipelineError

SETTING = "config key train.feature_blocks"
FIRST_LAYER = ("hidden_w", "logits_w")  # the first of these a head has multiplies the features


def block_names(info):
    return [block["name"] for block in feature_blocks(info)]


def feature_blocks(info):
    """backbone.json's blocks; a backbone.json without them is one block of the whole width."""
    return info.get("feature_blocks") or [{"name": "bottleneck", "offset": 0, "width": info["bottleneck_size"]}]


def columns(info, names):
    """The feature columns of the named blocks, in feature order (None for none named: every column)."""
    if not names:
        return None
    blocks = {block["name"]: block for block in feature_blocks(info)}
    unknown = [name for name in names if name not in blocks]
    if unknown:
        raise PipelineError(f"{SETTING}: the backbone has no block {unknown[0]!r} (it has {', '.join(blocks)})")
    chosen = sorted((blocks[name] for name in names), key=lambda block: block["offset"])
    return np.concatenate([np.arange(block["offset"], block["offset"] + block["width"]) for block in chosen])


def select(bottlenecks, used):
    """A bottleneck record (formats.read_bottlenecks) with only the ``used`` feature columns (None: all)."""
    if used is None:
        return bottlenecks
    return {**bottlenecks, "features": bottlenecks["features"][:, used]}


def expand_head(head, used, width):
    """A head trained on columns ``used`` as a head of all ``width`` columns that ignores the others."""
    if used is None or len(used) == width:
        return head
    first = next(key for key in FIRST_LAYER if key in head)
    expanded = dict(head)
    for key, fill in (("mean", 0.0), ("scale", 0.0)):
        full = np.full(width, fill, head[key].dtype)
        full[used] = head[key]
        expanded[key] = full
    weights = np.zeros((width, head[first].shape[1]), head[first].dtype)
    weights[used] = head[first]
    expanded[first] = weights
    return expanded
