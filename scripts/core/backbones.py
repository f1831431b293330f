"""The backbone registry: what the project knows about each kind of backbone and each named preset.

As TF-Slim's ``nets_factory`` or timm's pretrained configs, in plain Python (no TensorFlow):

* ``KINDS``: how a backbone is loaded. ``inception_v3`` is a TF-Slim checkpoint restored
  into TF-Slim's network (``untrained`` makes one with random weights); ``frozen_graph``
  is any frozen GraphDef cut between named tensors.
* ``PRESETS``: named backbones, each a set of ``backbone`` config keys (kind, tensors,
  input size and range, a source where one can be named, the regex of its top weights for
  fine-tuning). ``backbone.preset`` in the config picks one; keys set in the config win.

The config schema's choices (kinds, presets, precisions, engines) are read from here
(scripts/core/config_check.py), and ``resolve`` gives the rules one complete ``backbone``
section. Adding a backbone kind is adding a ``Kind`` (and its loader in
scripts/model/backbone.py); adding a preset is adding an entry to ``PRESETS``.
"""
import copy
from dataclasses import dataclass

from scripts.core.errors import PipelineError

# OpenVINO precisions of the backbone and deployed IRs (export.precisions, bottlenecks.precision).
PRECISIONS = ("FP32", "FP16", "INT8")
# What computes features: backbone.pb in TensorFlow, or the backbone IR at a precision.
ENGINES = ("tensorflow", *PRECISIONS)


@dataclass(frozen=True)
class Kind:
    """How one kind of backbone is loaded, and the facts every backbone of that kind shares."""
    format: str                    # "checkpoint" (TF-Slim network + weights) or "frozen_graph"
    description: str
    input_size: int | None = None  # default input size (None: must be given)
    input_range: tuple = (-1.0, 1.0)
    bottleneck: str | None = None  # checkpoint kinds: the end point that is the bottleneck
    spatial_map: str | None = None  # checkpoint kinds: the end point before the bottleneck's pooling
    scope: str | None = None       # checkpoint kinds: the network's variable scope
    excluded_scopes: tuple = ()    # checkpoint kinds: scopes not restored (the ImageNet classifiers)
    classes: int | None = None     # checkpoint kinds: the classifier width the checkpoint was saved with
    untrained: bool = False        # `source: untrained` makes a randomly initialised checkpoint
    untrained_file: str | None = None
    required: tuple = ()           # backbone keys this kind needs (from the config or a preset)


KINDS = {
    "inception_v3": Kind(
        format="checkpoint",
        description="TF-Slim Inception V3 checkpoint; bottleneck = 2048-d PreLogits",
        input_size=299,
        bottleneck="PreLogits",
        spatial_map="Mixed_7c",
        scope="InceptionV3",
        excluded_scopes=("InceptionV3/Logits", "InceptionV3/AuxLogits"),
        classes=1001,  # the official checkpoint's ImageNet head (with background)
        untrained=True,
        untrained_file="inception_v3_untrained.tar.gz",
    ),
    "frozen_graph": Kind(
        format="frozen_graph",
        description="any frozen GraphDef with a named input and bottleneck tensor",
        required=("input_tensor", "bottleneck_tensor", "input_size"),
    ),
}


# Each preset: `backbone` config keys. `source` is given where a stable one exists; `finetune_trainable`
# is the regex of the top block's weights (a starting point for finetune.trainable; not applied by itself).
PRESETS = {
    "inception_v3_imagenet": {
        "kind": "inception_v3",
        "source": "https://download.tensorflow.org/models/inception_v3_2016_08_28.tar.gz",
        "finetune_trainable": "^InceptionV3/Mixed_7c/",
    },
    # Google's 2015 ImageNet Inception V3 up to mixed_8 as one frozen graph (../shared/data/SOURCES.md).
    # The bottleneck is the 4-D map mixed_8, mixed_7 is a second block; the project pools both.
    "inception_v3_imagenet_mixed8": {
        "kind": "frozen_graph",
        "sha256": "8f4e82794433f0284ff9d6dee45489fcc7a2bc5f46424e82fce95d907de34827",
        "input_tensor": "input",
        "bottleneck_tensor": "mixed_8",
        "extra_endpoints": ["mixed_7"],
        "input_size": 299,
        "input_range": [-1.0, 1.0],
        "finetune_trainable": "^incv3/mixed_8/",
    },
    # MobileNet V1 0.25 (224x224), the frozen graph of tensorflow/models' release.
    "mobilenet_v1_025_224": {
        "kind": "frozen_graph",
        "sha256": "1cddeede49eb35af36061aaa66bf643b81f7ea89abc85f6ffef8f0bf00891756",
        "graph_member": "mobilenet_v1_0.25_224/frozen_graph.pb",
        "input_tensor": "input",
        "bottleneck_tensor": "MobilenetV1/Logits/AvgPool_1a/AvgPool",
        "input_size": 224,
        "input_range": [-1.0, 1.0],
        "finetune_trainable": "^MobilenetV1/MobilenetV1/Conv2d_13_",
    },
}

# Every key of the config's `backbone` section, with its value when neither the config nor the preset
# nor the kind gives one.
DEFAULTS = {
    "preset": None,
    "kind": None,
    "source": None,
    "sha256": None,
    "graph_member": None,
    "input_tensor": None,
    "bottleneck_tensor": None,
    "spatial_tensor": None,
    "extra_endpoints": [],
    "input_size": None,
    "input_range": None,
    "untrained_seed": 0,
}
PRESET_ONLY = ("finetune_trainable",)  # preset facts that are not config keys
# With neither backbone.preset nor backbone.kind given (config.yaml's default).
DEFAULT_PRESET = "inception_v3_imagenet"


def resolve(section):
    """The config's `backbone` section completed: config keys over the preset's, over the kind's defaults.

    With neither ``preset`` nor ``kind`` the preset is DEFAULT_PRESET. Returns a new dict with
    every key of DEFAULTS; what is missing or contradictory is one PipelineError line naming the key.
    """
    given = {key: value for key, value in (section or {}).items() if value is not None}
    name = given.get("preset") or (None if "kind" in given else DEFAULT_PRESET)
    if name is not None and name not in PRESETS:
        raise PipelineError(f"config key backbone.preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    preset = {key: value for key, value in PRESETS.get(name, {}).items() if key not in PRESET_ONLY}
    if "kind" in given and preset and given["kind"] != preset["kind"]:
        raise PipelineError(f"config key backbone.kind: preset {name!r} is a {preset['kind']}, not {given['kind']}")
    merged = copy.deepcopy({**DEFAULTS, **preset, **given, "preset": name})
    if merged["kind"] not in KINDS:
        raise PipelineError(f"config key backbone.kind: required, one of {', '.join(KINDS)} (or a backbone.preset)")
    kind = KINDS[merged["kind"]]
    if merged["input_size"] is None:
        merged["input_size"] = kind.input_size
    if merged["input_range"] is None:
        merged["input_range"] = list(kind.input_range)
    for key in kind.required:
        if not merged.get(key):
            raise PipelineError(f"config key backbone.{key}: required when backbone.kind is {merged['kind']!r}")
    if merged["source"] is None:
        raise PipelineError(f"config key backbone.source: required (preset {name!r} names no source)" if name
                            else "config key backbone.source: required")
    if merged["source"] == "untrained" and not kind.untrained:
        untrained = " or ".join(key for key, entry in KINDS.items() if entry.untrained)
        raise PipelineError(f"config key backbone.source: 'untrained' exists only for kind {untrained}")
    return merged


def preset_fact(name, key):
    """A preset's fact that is not a config key (e.g. ``finetune_trainable``), or None."""
    return PRESETS.get(name, {}).get(key)


def schema_choices():
    """{dotted schema path: allowed values}: the config schema's enums, set from here when it is loaded."""
    return {
        "properties.backbone.properties.kind": [*KINDS, None],
        "properties.backbone.properties.preset": [*PRESETS, None],
        "properties.bottlenecks.properties.precision": list(PRECISIONS),
        "definitions.export.properties.precisions.items": list(PRECISIONS),
    }
