"""Checks that an exported model computes what the trained model computes.

The reference is the trained head applied to the cached features of the test split
(at the precision of the backbone that computed them), averaged over the test-time
views. A check runs a sample of real test images through the exported file itself and
fails on any probability difference beyond the tolerance.
"""
import itertools

import numpy as np

from scripts.core import formats, records
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.core.inference import run_over_examples


def reference_probabilities(head, features_paths, temperature=1.0):
    """(probabilities [N, classes], the plain features' dict) from cached features: plain, then each view.

    ``temperature`` divides the logits before the softmax (a deployed model's calibration).
    """
    views = formats.read_views(features_paths)
    return head_lib.view_probabilities(head, [view["features"] for view in views], temperature), views[0]


def sample_check(model, contract, test_tfrecords, reference, count, tolerance, threads, what):
    """Run the first ``count`` test images through ``model``; fail if it differs from the reference.

    ``reference``: {"probabilities": [N, classes], "sha256": [N]} of the whole test split, in order.
    The result keeps the model's own outputs on the sample ("sample": sha256 and probabilities),
    so that another file run on the same images can be compared with this one (sample_agreement).
    """
    examples = list(itertools.islice(records.read_examples(test_tfrecords), count))
    probs, _, hashes, _ = run_over_examples(model, contract, iter(examples), 16, threads)
    result = {"images": len(hashes), "top1_disagreements": 0, "max_abs_probability_difference": 0.0,
              "tolerance": tolerance, "sample": {"sha256": [], "probabilities": []}}
    if probs is None:
        return result
    result["sample"] = {"sha256": [str(value) for value in hashes], "probabilities": probs.round(7).tolist()}
    if list(hashes) != list(reference["sha256"][:len(hashes)]):
        raise PipelineError(f"{what} check: the test TFRecords and the cached test features list different images")
    expected = reference["probabilities"][:len(hashes)]
    result["max_abs_probability_difference"] = float(np.abs(probs - expected).max())
    result["top1_disagreements"] = int((probs.argmax(axis=1) != expected.argmax(axis=1)).sum())
    if result["max_abs_probability_difference"] > tolerance:
        raise PipelineError(f"{what} check: the model differs from the trained head on {len(hashes)} test images "
                            f"({result['top1_disagreements']} top-1 disagreements, max probability difference "
                            f"{result['max_abs_probability_difference']:.2e} > {tolerance:g})")
    return result


def sample_agreement(check, reference_check, what):
    """Top-1 agreement and largest probability difference of two files' outputs on their common sample.

    Both are sample_check results; their models ran on the same first test images, each
    in its own engine, so neither is computed from the other's features.
    """
    reference = dict(zip(reference_check["sample"]["sha256"], reference_check["sample"]["probabilities"]))
    pairs = [(probs, reference[sha]) for sha, probs in zip(check["sample"]["sha256"], check["sample"]["probabilities"])
             if sha in reference]
    if not pairs:
        raise PipelineError(f"{what}: no test image in common with the reference's sample")
    ours, theirs = (np.array(side, np.float64) for side in zip(*pairs))
    return {"images": len(pairs), "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
            "max_abs_probability_difference": float(np.abs(ours - theirs).max())}
