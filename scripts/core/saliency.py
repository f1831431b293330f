"""Saliency maps: where in the image the head finds the evidence for a class.

The head (scripts/core/head.py) sees globally averaged features. backbone.json's
``spatial_maps`` lists the feature blocks that are the mean over the H x W positions of a
4-D map F [H, W, C] (the bottleneck's own map, ``spatial_tensor``, and every block the
project pools, e.g. Inception's mixed_7 beside mixed_8); other columns have no place.

* A linear head (no hidden layer): the class activation map is exact. With the
  standardisation folded in, logit_k = features @ W'[:, k] + b'_k, so a block at columns
  [o, o + C) gives ``map_k[h, w] = F[h, w, :] @ W'[o:o + C, k] / (H * W)``; the blocks'
  maps summed over their positions are the logit minus a constant (the bias b'_k plus
  the share of the columns no map covers).
* A head with a ReLU hidden layer: Grad-CAM. The gradient of the class logit with respect
  to the pooled features, ``alpha = scale * (hidden_w @ (logits_w[:, k] * [z > 0]))``,
  worked out from head.npz in NumPy, weighs each block's channels; the map is the ReLU
  of their sum.

Blocks of different resolutions are added as densities (``F @ w``, evidence per unit of
image area: the image-wide mean of a block's density is its share of the logit), each
upsampled to the finest block's grid: Inception's 17 x 17 mixed_7 sharpens the 8 x 8
mixed_8, and a head that uses mixed_7 alone is mapped at all.

Softmax probabilities do not change when the same amount is added to every logit, so a
logit is only defined up to that; with ``contrast`` (the default) class k's logit is
measured against the mean of all classes' (W'[:, k] minus the mean column), which
removes what every class shares (e.g. a plain background).

The spatial maps come from the float graph (backbone.pb, or frozen_model.pb with the
backbone under ``backbone/``) converted to OpenVINO with the features and the maps as its
outputs, run by scripts/core/inference.IrModel. (OpenVINO's converter drops the
names of inner tensors, so the deployed IRs cannot be asked for them afterwards.) Maps
are upsampled over the central crop the network saw and laid over the image.
"""
import numpy as np
from PIL import Image

from scripts.core import images, inference, tfcompat
from scripts.core.errors import PipelineError

FEATURES_OUTPUT = "saliency_features"
SPATIAL_OUTPUT = "saliency_spatial"
OVERLAY_OPACITY = 0.5


# ------------------------------------------------------------------ the spatial map
def block_maps(info):
    """[(offset, tensor)] of backbone.json's blocks that are the global average of a 4-D map."""
    if "spatial_maps" in info:
        return [(entry["offset"], entry["tensor"]) for entry in info["spatial_maps"]]
    return [(0, info["spatial_tensor"])] if info.get("spatial_tensor") else []  # a backbone.json of before


def graph_tensors(description):
    """(input, features, [(offset, map)], views) tensor names of a float graph, from backbone.json or model.json."""
    if "backbone" in description:  # model.json: the backbone is imported under backbone/, views in front
        info, prefix = description["backbone"], "backbone/"
        input_tensor, views = inference.tensor_name(description.get("input_node", "input")), description["test_time_views"]
    else:
        info, prefix = description, ""
        input_tensor, views = info["input_tensor"], [0]
    maps = block_maps(info)
    if not maps:
        raise PipelineError("the backbone records no spatial map (backbone.json spatial_maps): rebuild it with "
                            "config key backbone.spatial_tensor set")
    return input_tensor, prefix + info["bottleneck_tensor"], [(offset, prefix + name) for offset, name in maps], list(views)


def spatial_graph_def(graph_def, features_tensor, map_tensors):
    """The graph cut after new end nodes: the features and each spatial map."""
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        tf.identity(graph.get_tensor_by_name(features_tensor), name=FEATURES_OUTPUT)
        for index, name in enumerate(map_tensors):
            tf.identity(graph.get_tensor_by_name(name), name=f"{SPATIAL_OUTPUT}_{index}")
    ends = [FEATURES_OUTPUT] + [f"{SPATIAL_OUTPUT}_{index}" for index in range(len(map_tensors))]
    return tf.graph_util.extract_sub_graph(graph.as_graph_def(), ends)


class SpatialModel:
    """pixels [N, S, S, 3] -> (features [N, D], [(offset, map [N, H, W, C])]) of the image itself (view 0).

    An OpenVINO model of a float .pb (backbone.pb or frozen_model.pb) with those outputs.
    """

    def __init__(self, graph_pb, description, size, threads=1, device="CPU"):
        import openvino as ov
        input_tensor, features, maps, self.views = graph_tensors(description)
        self.offsets = [offset for offset, _ in maps]
        graph_def = spatial_graph_def(inference.load_graph_def(graph_pb), features, [name for _, name in maps])
        model = ov.convert_model(graph_def, input=[-1, size, size, 3])
        names = {name for output in model.outputs for name in output.get_names()}
        nodes = [FEATURES_OUTPUT] + [f"{SPATIAL_OUTPUT}_{index}" for index in range(len(maps))]
        outputs = [next(name for name in names if name.split(":")[0] == node) for node in nodes]
        self.model = inference.IrModel(model, threads, device, outputs)

    def __call__(self, pixels):
        features, *maps = self.model(pixels)
        step = len(self.views)  # a frozen model runs every view of an image as one batch, view 0 first
        return features.reshape(len(features), -1)[::step], [(offset, spatial[::step])
                                                             for offset, spatial in zip(self.offsets, maps)]


# ------------------------------------------------------------------ the head's weights
def linear_weights(head, contrast=True):
    """(W' [D, K], b' [K]): a linear head's logits = features @ W' + b', the standardisation folded in."""
    weights = head["scale"][:, None] * head["logits_w"]
    bias = head["logits_b"] - (head["mean"] * head["scale"]) @ head["logits_w"]
    if contrast:
        weights = weights - weights.mean(axis=1, keepdims=True)
        bias = bias - bias.mean()
    return weights, bias


def logit_gradients(head, features, contrast=True):
    """d logits / d features [N, D, K] for features [N, D] (constant for a linear head)."""
    if "hidden_w" not in head:
        weights, _ = linear_weights(head, contrast)
        return np.broadcast_to(weights, (len(features), *weights.shape))
    standardised = (features - head["mean"]) * head["scale"]
    active = (standardised @ head["hidden_w"] + head["hidden_b"] > 0).astype(np.float32)  # [N, U]
    logits_w = head["logits_w"] - head["logits_w"].mean(axis=1, keepdims=True) if contrast else head["logits_w"]
    # scale_d * sum_u hidden_w[d, u] * active[n, u] * logits_w[u, k]
    return head["scale"][None, :, None] * np.einsum("du,nu,uk->ndk", head["hidden_w"], active, logits_w)


def check_head(head, features, maps):
    """One line when the head does not fit these features."""
    if head["mean"].shape[0] != features.shape[1]:
        raise PipelineError(f"head: {head['mean'].shape[0]} features, the backbone gives {features.shape[1]}")
    for offset, spatial in maps:
        if offset + spatial.shape[-1] > features.shape[1]:
            raise PipelineError(f"spatial map of {spatial.shape[-1]} channels at column {offset}: beyond the "
                                f"{features.shape[1]} features")


def mapped_columns(maps, width):
    """A mask [width] of the feature columns some spatial map accounts for."""
    mask = np.zeros(width, bool)
    for offset, spatial in maps:
        mask[offset:offset + spatial.shape[-1]] = True
    return mask


def linear_decomposition(head, features, maps, contrast=True):
    """A linear head's exact maps, one [N, H, W, K] per block, and the rest [N, K]:
    the maps summed over their positions + the rest = the logits."""
    check_head(head, features, maps)
    weights, bias = linear_weights(head, contrast)
    parts = [spatial @ weights[offset:offset + spatial.shape[-1]] / (spatial.shape[1] * spatial.shape[2])
             for offset, spatial in maps]
    unmapped = ~mapped_columns(maps, features.shape[1])
    return parts, bias + features[:, unmapped] @ weights[unmapped]


def resized(cells, height, width):
    """Maps [N, h, w] resized (bilinear) to [N, height, width]."""
    if cells.shape[1:] == (height, width):
        return cells
    return np.stack([np.asarray(Image.fromarray(np.asarray(one, np.float32), "F").resize((width, height), Image.BILINEAR))
                     for one in cells])


def class_maps(head, features, maps, classes, contrast=True):
    """The map [N, H, W] of class ``classes[n]`` for each image on the finest block's grid: CAM (linear
    head) or Grad-CAM (hidden layer), the blocks' densities (F @ w per position) added up."""
    check_head(head, features, maps)
    index = np.arange(len(features))
    gradients = logit_gradients(head, features, contrast)[index, :, np.asarray(classes)]  # [N, D]
    height = max(spatial.shape[1] for _, spatial in maps)
    width = max(spatial.shape[2] for _, spatial in maps)
    total = np.zeros((len(features), height, width), np.float32)
    for offset, spatial in maps:
        density = np.einsum("nhwc,nc->nhw", spatial, gradients[:, offset:offset + spatial.shape[-1]])
        total += resized(density, height, width)
    return total if "hidden_w" not in head else np.maximum(total, 0.0)


# ------------------------------------------------------------------ on the image
def normalised(feature_map):
    """The map scaled to [0, 1] (all zeros when it is flat)."""
    low, high = float(feature_map.min()), float(feature_map.max())
    return (feature_map - low) / (high - low) if high > low else np.zeros_like(feature_map)


def image_map(feature_map, width, height, contract):
    """The normalised map upsampled (bilinear) over the central crop the network saw: float32 [height, width].

    Outside the crop it is 0.
    """
    left, top, right, bottom = images.central_crop_box(width, height, contract["central_fraction"])
    cells = Image.fromarray(normalised(np.asarray(feature_map, np.float32)).astype(np.float32), "F")
    full = np.zeros((height, width), np.float32)
    full[top:bottom, left:right] = np.asarray(cells.resize((right - left, bottom - top), Image.BILINEAR))
    return full


def peak(full_map):
    """(x, y) pixel of the map's maximum."""
    y, x = np.unravel_index(int(np.argmax(full_map)), full_map.shape)
    return int(x), int(y)


def colour(values):
    """A blue-cyan-yellow-red colour scale ('jet') for values in [0, 1]: uint8 [..., 3]."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], np.float32)  # red, green, blue
    return (np.clip(1.5 - np.abs(4.0 * (values - centres)), 0.0, 1.0) * 255).astype(np.uint8)


def overlay(image, full_map, opacity=OVERLAY_OPACITY):
    """The RGB image with the map laid over it (a PIL image of the same size)."""
    pixels = np.asarray(image.convert("RGB"), np.float32)
    alpha = opacity * np.clip(full_map, 0.0, 1.0)[..., None] ** 0.5  # weak evidence stays see-through
    blended = pixels * (1 - alpha) + colour(full_map).astype(np.float32) * alpha
    return Image.fromarray(np.rint(blended).astype(np.uint8), "RGB")
