"""Saliency maps: where in the image the head finds the evidence for a class.

The head (scripts/core/head.py) sees globally averaged features: the first C of them are
the mean over the H x W positions of the backbone's spatial map F [H, W, C] (its
``spatial_tensor`` in backbone.json); extra end points, when there are any, follow.

* A linear head (no hidden layer): the class activation map is exact. With the
  standardisation folded in, logit_k = features @ W'[:, k] + b'_k, so
  ``map_k[h, w] = F[h, w, :] @ W'[:C, k] / (H * W)`` sums over the positions to the logit
  minus a constant: the bias b'_k plus the extra end points' share (they have no place
  in this map; only the spatial block's columns W'[:C] are used).
* A head with a ReLU hidden layer: Grad-CAM. The gradient of the class logit with respect
  to the pooled features, ``alpha = scale * (hidden_w @ (logits_w[:, k] * [z > 0]))``,
  worked out from head.npz in NumPy, weighs the channels: ``map_k = ReLU(F @ alpha[:C])``.

Softmax probabilities do not change when the same amount is added to every logit, so a
logit is only defined up to that; with ``contrast`` (the default) class k's logit is
measured against the mean of all classes' (W'[:, k] minus the mean column), which
removes what every class shares (e.g. a plain background).

The spatial map comes from the float graph (backbone.pb, or frozen_model.pb with the
backbone under ``backbone/``) converted to OpenVINO with the features and the map as its
two outputs, run by scripts/core/inference.IrModel. (OpenVINO's converter drops the
names of inner tensors, so the deployed IRs cannot be asked for it afterwards.) Maps
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
def graph_tensors(description):
    """(input, features, spatial, views) tensor names of a float graph, from backbone.json or model.json."""
    if "backbone" in description:  # model.json: the backbone is imported under backbone/, views in front
        info, prefix = description["backbone"], "backbone/"
        input_tensor, views = inference.tensor_name(description.get("input_node", "input")), description["test_time_views"]
    else:
        info, prefix = description, ""
        input_tensor, views = info["input_tensor"], [0]
    if not info.get("spatial_tensor"):
        raise PipelineError("the backbone records no spatial_tensor (backbone.json): rebuild it with config key "
                            "backbone.spatial_tensor set")
    return input_tensor, prefix + info["bottleneck_tensor"], prefix + info["spatial_tensor"], list(views)


def spatial_graph_def(graph_def, features_tensor, spatial_tensor):
    """The graph cut after two new end nodes: the features and the spatial map."""
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        tf.identity(graph.get_tensor_by_name(features_tensor), name=FEATURES_OUTPUT)
        tf.identity(graph.get_tensor_by_name(spatial_tensor), name=SPATIAL_OUTPUT)
    return tf.graph_util.extract_sub_graph(graph.as_graph_def(), [FEATURES_OUTPUT, SPATIAL_OUTPUT])


class SpatialModel:
    """pixels [N, S, S, 3] -> (features [N, D], spatial map [N, H, W, C]) of the image itself (view 0).

    An OpenVINO model of a float .pb (backbone.pb or frozen_model.pb) with those two outputs.
    """

    def __init__(self, graph_pb, description, size, threads=1, device="CPU"):
        import openvino as ov
        input_tensor, features, spatial, self.views = graph_tensors(description)
        graph_def = spatial_graph_def(inference.load_graph_def(graph_pb), features, spatial)
        model = ov.convert_model(graph_def, input=[-1, size, size, 3])
        names = {name for output in model.outputs for name in output.get_names()}
        outputs = [next(name for name in names if name.split(":")[0] == node) for node in (FEATURES_OUTPUT, SPATIAL_OUTPUT)]
        self.model = inference.IrModel(model, threads, device, outputs)

    def __call__(self, pixels):
        features, spatial = self.model(pixels)
        step = len(self.views)  # a frozen model runs every view of an image as one batch, view 0 first
        return features.reshape(len(features), -1)[::step], spatial[::step]


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


def check_head(head, features, spatial):
    """One line when the head does not fit these features."""
    if head["mean"].shape[0] != features.shape[1]:
        raise PipelineError(f"head: {head['mean'].shape[0]} features, the backbone gives {features.shape[1]}")
    if spatial.shape[-1] > features.shape[1]:
        raise PipelineError(f"spatial map of {spatial.shape[-1]} channels, more than the {features.shape[1]} features")


def linear_decomposition(head, features, spatial, contrast=True):
    """A linear head's exact maps [N, H, W, K] and the rest [N, K]: maps summed over H, W + rest = logits."""
    check_head(head, features, spatial)
    weights, bias = linear_weights(head, contrast)
    channels = spatial.shape[-1]
    maps = spatial @ weights[:channels] / (spatial.shape[1] * spatial.shape[2])
    rest = bias + features[:, channels:] @ weights[channels:]
    return maps, rest


def class_maps(head, features, spatial, classes, contrast=True):
    """The map [N, H, W] of class ``classes[n]`` for each image: CAM (linear head) or Grad-CAM (hidden layer)."""
    check_head(head, features, spatial)
    classes = np.asarray(classes)
    if "hidden_w" not in head:
        maps, _ = linear_decomposition(head, features, spatial, contrast)
        return maps[np.arange(len(maps)), :, :, classes]
    channels = spatial.shape[-1]
    alpha = logit_gradients(head, features, contrast)[np.arange(len(features)), :channels, classes]  # [N, C]
    return np.maximum(np.einsum("nhwc,nc->nhw", spatial, alpha), 0.0)


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
