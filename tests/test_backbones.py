"""The backbone registry, feature blocks, and the real ImageNet Inception V3 graph (cut after mixed_8)."""
import os

import numpy as np
import pytest

from scripts.core import atomic, backbones, blocks
from scripts.core import head as head_lib
from scripts.core.config_check import load_schema, point_name
from scripts.core.errors import PipelineError
from scripts.core.inference import GraphModel
from tests.conftest import REPO, SHARED_DATA

SCHEMA = os.path.join(REPO, "workflow", "schemas", "config.schema.yaml")
INCEPTION_PB = os.path.join(SHARED_DATA, "weights", "inception_v3_mixed8_frozen.pb")


def test_no_preset_and_no_kind_is_the_official_inception_v3_checkpoint():
    resolved = backbones.resolve({"preset": None, "kind": None, "source": None})
    assert resolved["preset"] == "inception_v3_imagenet" and resolved["kind"] == "inception_v3"
    assert resolved["source"].endswith("inception_v3_2016_08_28.tar.gz")
    assert resolved["input_size"] == 299 and resolved["input_range"] == [-1.0, 1.0]


def test_a_preset_fills_the_keys_and_config_keys_win():
    resolved = backbones.resolve({"preset": "mobilenet_v1_025_224", "source": "m.tgz", "extra_endpoints": ["x"]})
    assert resolved["bottleneck_tensor"] == "MobilenetV1/Logits/AvgPool_1a/AvgPool" and resolved["input_size"] == 224
    assert resolved["extra_endpoints"] == ["x"] and resolved["source"] == "m.tgz"
    mixed8 = backbones.resolve({"preset": "inception_v3_imagenet_mixed8", "source": "g.pb"})
    assert (mixed8["bottleneck_tensor"], mixed8["extra_endpoints"]) == ("mixed_8", ["mixed_7"])


def test_a_kind_without_a_preset_takes_only_the_kinds_defaults():
    resolved = backbones.resolve({"kind": "inception_v3", "source": "untrained"})
    assert resolved["preset"] is None and resolved["input_size"] == 299
    with pytest.raises(PipelineError, match="backbone.input_tensor: required when backbone.kind is 'frozen_graph'"):
        backbones.resolve({"kind": "frozen_graph", "source": "g.pb"})


@pytest.mark.parametrize("section, words", [
    ({"preset": "resnet"}, "backbone.preset: unknown preset 'resnet'"),
    ({"preset": "mobilenet_v1_025_224"}, "backbone.source: required (preset 'mobilenet_v1_025_224'"),
    ({"preset": "mobilenet_v1_025_224", "kind": "inception_v3", "source": "m"}, "is a frozen_graph"),
    ({"preset": "mobilenet_v1_025_224", "source": "untrained"}, "'untrained' exists only for kind inception_v3"),
])
def test_bad_backbone_settings_are_one_line_naming_the_key(section, words):
    with pytest.raises(PipelineError, match="^config key backbone") as error:
        backbones.resolve(section)
    assert words in str(error.value)


def test_the_schema_choices_come_from_the_registry():
    schema = load_schema(SCHEMA)
    backbone = schema["properties"]["backbone"]["properties"]
    assert backbone["kind"]["enum"] == [*backbones.KINDS, None]
    assert backbone["preset"]["enum"] == [*backbones.PRESETS, None]
    assert schema["definitions"]["export"]["properties"]["precisions"]["items"]["enum"] == list(backbones.PRECISIONS)
    assert backbones.ENGINES == ("tensorflow", "FP32", "FP16", "INT8")


INFO = {"bottleneck_size": 7, "feature_blocks": [{"name": "top", "offset": 0, "width": 4},
                                                 {"name": "middle", "offset": 4, "width": 3}]}


def test_block_columns_follow_feature_order_and_unknown_blocks_are_named():
    assert list(blocks.columns(INFO, ["middle"])) == [4, 5, 6]
    assert list(blocks.columns(INFO, ["middle", "top"])) == list(range(7))
    assert blocks.columns(INFO, None) is None  # every column: nothing to select
    with pytest.raises(PipelineError, match="train.feature_blocks: the backbone has no block 'mixed_9'"):
        blocks.columns(INFO, ["mixed_9"])


@pytest.mark.parametrize("hidden", [False, True])
def test_an_expanded_head_computes_what_the_narrow_head_computed(hidden):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 7)).astype(np.float32) * 5
    used = blocks.columns(INFO, ["middle"])
    first = (3, 5) if hidden else (3, 2)
    narrow = {"mean": rng.normal(size=3).astype(np.float32), "scale": rng.uniform(0.5, 2, 3).astype(np.float32),
              ("hidden_w" if hidden else "logits_w"): rng.normal(size=first).astype(np.float32)}
    if hidden:
        narrow.update(hidden_b=rng.normal(size=5).astype(np.float32), logits_w=rng.normal(size=(5, 2)).astype(np.float32))
    narrow["logits_b"] = rng.normal(size=2).astype(np.float32)
    wide = blocks.expand_head(narrow, used, 7)
    assert wide["mean"].shape == (7,) and not wide["scale"][:4].any()
    np.testing.assert_allclose(head_lib.probabilities(wide, features),
                               head_lib.probabilities(narrow, features[:, used]), rtol=1e-6)
    # The unused columns change nothing, whatever their values.
    changed = features.copy()
    changed[:, :4] = 1e6
    np.testing.assert_array_equal(head_lib.probabilities(wide, changed), head_lib.probabilities(wide, features))


def test_swept_block_lists_make_names_that_are_safe_in_paths():
    assert point_name({"train.feature_blocks": ["mixed_8", "mixed_7"]}) == "blocksmixed_8.mixed_7"
    assert point_name({"train.feature_blocks": ["MobilenetV1/Conv2d_11/Relu6"]}) == "blocksMobilenetV1_Conv2d_11_Relu6"


def test_the_real_inception_v3_graph_pools_its_maps_into_two_blocks(tmp_path):
    """The shared ImageNet Inception V3 (to mixed_8) through the preset: blocks, spatial map, values."""
    from scripts.model import backbone
    settings = backbones.resolve({"preset": "inception_v3_imagenet_mixed8", "source": INCEPTION_PB})
    pb, info_json = str(tmp_path / "backbone.pb"), str(tmp_path / "backbone.json")
    width = backbone.prepare(settings["kind"], settings["source"], pb, info_json, settings["input_size"],
                             settings["input_range"], False, None, settings["input_tensor"],
                             settings["bottleneck_tensor"], settings["extra_endpoints"])
    info = atomic.read_json(info_json)
    assert width == info["bottleneck_size"] == 2048
    assert [(block["name"], block["width"], block["offset"], block["pooled"]) for block in info["feature_blocks"]] == \
        [("mixed_8", 1280, 0, True), ("mixed_7", 768, 1280, True)]
    assert info["spatial_tensor"] == "mixed_8:0" and info["spatial_shape"] == [8, 8, 1280]
    # Both blocks are maps the saliency weighs: mixed_8 (8 x 8) and mixed_7 (17 x 17).
    assert [(entry["block"], entry["tensor"], entry["offset"], entry["shape"]) for entry in info["spatial_maps"]] == \
        [("mixed_8", "mixed_8:0", 0, [8, 8, 1280]), ("mixed_7", "mixed_7:0", 1280, [17, 17, 768])]
    pixels = np.random.default_rng(1).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    features = GraphModel(pb, info["input_tensor"], info["bottleneck_tensor"])(pixels)
    # The project's pooling of each map equals the graph's own pooled outputs (a pooled node not at the end).
    for block, own in (("mixed_8", "mixed_8_pool:0"), ("mixed_7", "mixed_7_pool:0")):
        record = next(entry for entry in info["feature_blocks"] if entry["name"] == block)
        expected = GraphModel(INCEPTION_PB, "input:0", own)(pixels)
        np.testing.assert_allclose(features[:, record["offset"]:record["offset"] + record["width"]], expected,
                                   rtol=1e-4, atol=1e-5)
    spatial = GraphModel(pb, info["input_tensor"], info["spatial_tensor"])(pixels)
    assert spatial.shape == (2, 8, 8, 1280)
