"""Backbones: turn a checkpoint or frozen graph into one frozen feature graph.

Whatever the source, the `backbone` stage writes ``backbone.pb`` (a GraphDef whose
Placeholder takes a [N, size, size, 3] float batch in the backbone's value range and
ends at the features) and ``backbone.json`` (tensor names, input size and range, feature
width, provenance). Bottlenecks, fine-tuning, freezing and the IRs read only those.

The features are feature blocks side by side (``features``): the bottleneck, then each
of ``extra_endpoints`` (middle layers carry texture that an ImageNet network's last layer
discards). A block that is a 4-D map [N, H, W, C] is globally average-pooled here, so a
frozen graph may end at a map (e.g. Inception's ``mixed_8``) as well as at its own pooling.
backbone.json lists the blocks (name, tensor, width, offset in the feature vector; heads
may use some of them, scripts/core/blocks.py).

What each kind of backbone is (input size, scopes, untrained form) is in the registry,
scripts/core/backbones.py; this module holds the TensorFlow code of each loader.

``spatial_tensor`` in backbone.json names the feature map [N, H, W, C] whose global
average is the bottleneck (the first C feature columns). A checkpoint kind: its registry
entry's ``spatial_map`` (Inception V3: Mixed_7c); a frozen graph: config
``backbone.spatial_tensor``, or else the map the bottleneck is pooled from (the bottleneck
itself when it is a 4-D map). ``spatial_maps`` lists it and every other block pooled here
(block, tensor, offset, [H, W, C]): saliency maps (scripts/core/saliency.py) weigh their channels.

Entry points:
    python -m scripts.model.backbone untrained --output inception_v3_untrained.tar.gz --seed 0 --size 299
    python -m scripts.model.backbone prepare --kind inception_v3 --source DIR_OR_FILE ...
"""
import argparse
import glob
import io
import os
import tarfile
import tempfile

import numpy as np

from scripts.core import atomic, backbones, model_check, tfcompat
from scripts.core.contract import UNTRAINED_NOTE, note
from scripts.core.errors import PipelineError, run_cli
from scripts.core.inference import GraphModel, load_graph_def, tensor_name

INCEPTION_V3 = backbones.KINDS["inception_v3"]
CHECKPOINT_NAME = "inception_v3.ckpt"  # the name inside the official tarball
FEATURES_NODE = "features"  # the concatenated output when there are extra end points
# Ops a spatial map passes through on its way to a pooled bottleneck (walked back to find the map).
POOLING_OPS = {"Identity", "Squeeze", "Reshape", "AvgPool", "Mean", "MaxPool"}
PASS_THROUGH_OPS = ("Identity", "Squeeze", "Reshape")  # a configured map given by one of its aliases


def build_inception_v3(tf, size):
    """Inception V3 in inference mode on a new 'input' Placeholder; returns (input, end points)."""
    slim = tfcompat.tf_slim()
    inception_v3 = tfcompat.inception_v3_module()
    images = tf.placeholder(tf.float32, [None, size, size, 3], name="input")
    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        _, end_points = inception_v3.inception_v3(images, num_classes=INCEPTION_V3.classes, is_training=False)
    return images, end_points


# The TF-Slim network of each checkpoint kind of the registry.
NETWORKS = {"inception_v3": build_inception_v3}


def make_untrained_inception_v3(output_tar, seed, size):
    """A randomly initialised Inception V3 in the official checkpoint's format.

    The official ``inception_v3_2016_08_28.tar.gz`` holds one V1-format file,
    ``inception_v3.ckpt``; this writes the same, so the same loading code is tested.
    """
    tf = tfcompat.tf_v1()  # first: it imports TensorFlow quietly
    from tensorflow.core.protobuf import saver_pb2
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        build_inception_v3(tf, size)
        saver = tf.train.Saver(write_version=saver_pb2.SaverDef.V1)
        with tf.Session() as session, tempfile.TemporaryDirectory() as folder:
            session.run(tf.global_variables_initializer())
            checkpoint = os.path.join(folder, CHECKPOINT_NAME)
            saver.save(session, checkpoint, write_meta_graph=False)
            text = f"{UNTRAINED_NOTE}: random initialisation, seed {seed}\n".encode()
            with atomic.atomic_path(output_tar) as temp, tarfile.open(temp, "w:gz") as tar:
                tar.add(checkpoint, arcname=CHECKPOINT_NAME)
                info = tarfile.TarInfo("UNTRAINED_BACKBONE.txt")
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))


def find_checkpoint(source):
    """The checkpoint prefix inside an unpacked folder, or the given .ckpt path."""
    if os.path.isfile(source) or glob.glob(glob.escape(source) + ".index"):
        return source
    model_check.check_checkpoint_folder(source)  # an unpacked archive: checkpoint files and notes only
    candidates = sorted(glob.glob(os.path.join(source, "**", "*.ckpt"), recursive=True))
    candidates += sorted(path[:-len(".index")] for path in
                         glob.glob(os.path.join(source, "**", "*.ckpt.index"), recursive=True))
    if not candidates:
        raise PipelineError(f"{source}: no Inception V3 checkpoint (*.ckpt) found (backbone.source)")
    return candidates[0]


def _spatial_size(tensor):
    return int(np.prod(tensor.shape[1:3])) if tensor.shape.ndims == 4 else 1


def _flat(tf, tensor):
    """A block as [N, width]: a 4-D map with more than one position is average-pooled, else flattened."""
    if _spatial_size(tensor) > 1:
        tensor = tf.reduce_mean(tensor, axis=[1, 2])
    return tf.reshape(tensor, [-1, int(np.prod(tensor.shape[1:]))])


def feature_output(tf, blocks):
    """The features of (name, tensor) blocks side by side, and each block's record (name, tensor, width,
    offset, pooled, shape: the tensor's own, batch left out)."""
    records, offset = [], 0
    for name, tensor in blocks:
        pooled = _spatial_size(tensor) > 1
        width = int(tensor.shape[-1]) if pooled else int(np.prod(tensor.shape[1:]))
        records.append({"name": name, "tensor": tensor.name, "width": width, "offset": offset, "pooled": pooled,
                        "shape": [None if size is None else int(size) for size in tensor.shape[1:]]})
        offset += width
    first = blocks[0][1]
    if len(blocks) == 1 and _spatial_size(first) == 1:
        return first, records  # the bottleneck as it is (load_backbone flattens [N, 1, 1, C])
    parts = [_flat(tf, tensor) for _, tensor in blocks]
    output = tf.concat(parts, axis=1, name=FEATURES_NODE) if len(parts) > 1 else tf.identity(parts[0], FEATURES_NODE)
    return output, records


def spatial_map(bottleneck):
    """The last 4-D tensor with more than one position that the bottleneck is pooled from, or None."""
    tensor = bottleneck
    while True:
        if tensor.shape.ndims == 4 and _spatial_size(tensor) > 1:
            return tensor.name
        if tensor.op.type not in POOLING_OPS or not tensor.op.inputs:
            return None
        tensor = tensor.op.inputs[0]


def freeze_checkpoint(kind_name, checkpoint, size, extra_endpoints):
    """Restore everything but the excluded scopes (the ImageNet heads) and freeze up to the features.

    Returns (graph_def, output name, feature blocks, spatial map).
    """
    tf = tfcompat.tf_v1()
    slim = tfcompat.tf_slim()
    kind = backbones.KINDS[kind_name]
    graph = tf.Graph()
    with graph.as_default():
        _, end_points = NETWORKS[kind_name](tf, size)
        for name in extra_endpoints:
            if name not in end_points:
                raise PipelineError(f"config key backbone.extra_endpoints: {kind_name} has no end point {name!r} "
                                    f"(it has {', '.join(sorted(end_points))})")
        blocks = [(name, end_points[name]) for name in [kind.bottleneck, *extra_endpoints]]
        output, records = feature_output(tf, blocks)
        spatial = end_points[kind.spatial_map].name
        variables = slim.get_variables_to_restore(exclude=list(kind.excluded_scopes))
        saver = tf.train.Saver(variables)
        # Checked from the checkpoint's index before restoring allocates what it declares.
        expected = {variable.op.name: (variable.shape.as_list(), variable.dtype.base_dtype.name)
                    for variable in variables}
        model_check.check_checkpoint_shapes(checkpoint, expected, model_check.check_checkpoint_files(checkpoint))
        with tf.Session() as session:
            try:
                saver.restore(session, checkpoint)
            except (tf.errors.OpError, ValueError) as error:
                first_line = str(error).strip().splitlines()[0]
                raise PipelineError(f"{checkpoint}: not a {kind_name} checkpoint ({first_line})") from None
            graph_def = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(),
                                                                    [output.op.name])
    return graph_def, output.name, records, spatial


def find_graph(source, member):
    """The .pb to use: the given file, or `member` (or the only .pb) inside a folder."""
    if os.path.isfile(source):
        return source
    if member:
        path = os.path.join(source, member)
        if not os.path.isfile(path):
            raise PipelineError(f"config key backbone.graph_member: {member} is not in the archive")
        return path
    graphs = sorted(glob.glob(os.path.join(source, "**", "*.pb"), recursive=True))
    if len(graphs) != 1:
        raise PipelineError(f"config key backbone.graph_member: the archive holds {len(graphs)} .pb "
                            "files; name the one to use")
    return graphs[0]


def _node_name(name):
    return name.split(":")[0]


def _through_pass_through(nodes, name):
    """The node a chain of Identity/Squeeze/Reshape nodes starts from."""
    while name in nodes and nodes[name].op in PASS_THROUGH_OPS:
        name = _node_name(nodes[name].input[0])
    return name


def spatial_source(graph_def, spatial_tensor):
    """The configured spatial map's tensor name in the cut graph.

    A configured tensor that is only an Identity of the map (e.g. ``mixed_8`` beside
    ``mixed_8_pool``) is followed to the node the bottleneck is computed from, so that
    the cut graph, which keeps the bottleneck's ancestors only, holds it.
    """
    nodes = {node.name: node for node in graph_def.node}
    if _node_name(spatial_tensor) not in nodes:
        raise PipelineError(f"config key backbone.spatial_tensor: the graph has no node {_node_name(spatial_tensor)!r}")
    return tensor_name(_through_pass_through(nodes, _node_name(spatial_tensor)))


def cut_frozen_graph(graph_def, input_tensor, bottleneck_tensor, extra_endpoints):
    """Keep the nodes from the input to the features, with a free batch.

    The bottleneck and extra tensors may be anywhere in the graph (not only its last node),
    2-D or 4-D maps. Returns (graph_def, output name, feature blocks, spatial map).
    """
    tf = tfcompat.tf_v1()
    names = {node.name for node in graph_def.node}
    wanted = [("input_tensor", input_tensor), ("bottleneck_tensor", bottleneck_tensor)]
    wanted += [("extra_endpoints", name) for name in extra_endpoints]
    for key, tensor in wanted:
        if _node_name(tensor) not in names:
            raise PipelineError(f"config key backbone.{key}: the graph has no node {_node_name(tensor)!r}")
    for node in graph_def.node:
        if node.name == _node_name(input_tensor) and "shape" in node.attr:
            dims = node.attr["shape"].shape.dim
            if dims:
                dims[0].size = -1  # many frozen graphs fix the batch at 1
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        blocks = [(_node_name(name), graph.get_tensor_by_name(tensor_name(name)))
                  for name in [bottleneck_tensor, *extra_endpoints]]
        output, records = feature_output(tf, blocks)
        spatial = spatial_map(blocks[0][1])
    return tf.graph_util.extract_sub_graph(graph.as_graph_def(), [output.op.name]), output.name, records, spatial


def check_spatial(graph_def, input_tensor, output, spatial, input_size, configured):
    """[H, W, C] of the spatial map, once its global average is seen to be the first C features.

    Saliency maps are exact only then. A configured tensor that fails is an error; a
    guessed one is dropped (None, None).
    """
    if spatial is None:
        return None, None
    if spatial not in {tensor_name(node.name) for node in graph_def.node}:
        if configured:
            raise PipelineError(f"config key backbone.spatial_tensor: {configured} is not one the features are computed from")
        return None, None
    pixels = np.random.default_rng(0).uniform(-1, 1, (1, input_size, input_size, 3)).astype(np.float32)
    features, feature_map = GraphModel(graph_def, input_tensor, [output, spatial])(pixels)
    features = features.reshape(1, -1)
    if feature_map.ndim == 4 and feature_map.shape[3] <= features.shape[1]:
        pooled = feature_map.mean(axis=(1, 2))
        if np.allclose(pooled, features[:, :feature_map.shape[3]], rtol=1e-4, atol=1e-5):
            return spatial, [int(size) for size in feature_map.shape[1:]]
    if configured:
        raise PipelineError(f"config key backbone.spatial_tensor: the global average of {configured} "
                            f"{list(feature_map.shape[1:])} is not the bottleneck")
    return None, None


def spatial_maps(blocks, spatial, spatial_shape):
    """The blocks that are a 4-D map's global average: the checked bottleneck map, then each block pooled here."""
    maps = [{"block": blocks[0]["name"], "tensor": spatial, "offset": 0, "shape": spatial_shape}] if spatial else []
    return maps + [{"block": block["name"], "tensor": block["tensor"], "offset": block["offset"], "shape": block["shape"]}
                   for block in blocks[1:] if block["pooled"]]


def prepare(kind, source, output_pb, output_json, input_size, input_range, untrained,
            graph_member, input_tensor, bottleneck_tensor, extra_endpoints, spatial_tensor=None):
    """Write backbone.pb and backbone.json from a checkpoint or a frozen graph; return the feature width."""
    if backbones.KINDS[kind].format == "checkpoint":
        graph_def, output, blocks, spatial = freeze_checkpoint(kind, find_checkpoint(source), input_size,
                                                               extra_endpoints)
        input_tensor, configured = "input:0", None
    else:
        original = load_graph_def(find_graph(source, graph_member))
        graph_def, output, blocks, spatial = cut_frozen_graph(original, input_tensor, bottleneck_tensor,
                                                              extra_endpoints)
        if spatial_tensor:
            spatial = spatial_source(original, spatial_tensor)
        input_tensor, configured = tensor_name(input_tensor), spatial_tensor
    probe = GraphModel(graph_def, input_tensor, output)
    width = int(np.prod(probe(np.zeros((1, input_size, input_size, 3), np.float32)).shape[1:]))
    if width != sum(block["width"] for block in blocks):
        raise PipelineError(f"{source}: the feature blocks give {sum(block['width'] for block in blocks)} values, "
                            f"the graph {width} (a block of unknown shape?)")
    # Inception V3's PreLogits is Mixed_7c's global average at sizes up to 299 only: beyond, no map is recorded.
    spatial, spatial_shape = check_spatial(graph_def, input_tensor, output, spatial, input_size, configured)
    maps = spatial_maps(blocks, spatial, spatial_shape)
    atomic.write_bytes(output_pb, graph_def.SerializeToString(deterministic=True))
    atomic.write_json(output_json, {
        "kind": kind,
        "input_tensor": input_tensor,
        "bottleneck_tensor": output,
        "bottleneck_size": width,
        "extra_endpoints": list(extra_endpoints),
        "feature_blocks": blocks,
        "spatial_tensor": spatial,
        "spatial_shape": spatial_shape,
        "spatial_maps": maps,
        "input_size": input_size,
        "input_range": [float(value) for value in input_range],
        "untrained": bool(untrained),
        "note": note(untrained),
        "nodes": len(graph_def.node),
    })
    return width


def main(argv=None):
    parser = argparse.ArgumentParser(description="Prepare a backbone as one frozen feature graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    untrained = commands.add_parser("untrained", help="write a randomly initialised Inception V3 "
                                    "checkpoint archive in the official format")
    untrained.add_argument("--output", required=True, help=".tar.gz to write")
    untrained.add_argument("--seed", type=int, required=True)
    untrained.add_argument("--size", type=int, required=True)
    prep = commands.add_parser("prepare", help="write backbone.pb and backbone.json")
    prep.add_argument("--kind", choices=list(backbones.KINDS), required=True)
    prep.add_argument("--source", required=True, help="unpacked folder, .ckpt or .pb")
    prep.add_argument("--output-pb", required=True)
    prep.add_argument("--output-json", required=True)
    prep.add_argument("--input-size", type=int, required=True)
    prep.add_argument("--input-range", type=float, nargs=2, required=True)
    prep.add_argument("--untrained", action="store_true", help="mark outputs 'untrained backbone'")
    prep.add_argument("--graph-member", default="", help="frozen_graph: the .pb inside the archive")
    prep.add_argument("--input-tensor", default="", help="frozen_graph: input tensor name")
    prep.add_argument("--bottleneck-tensor", default="", help="frozen_graph: bottleneck tensor name")
    prep.add_argument("--extra-endpoints", nargs="*", default=[],
                      help="end points (inception_v3) or tensors (frozen_graph) to pool and append")
    prep.add_argument("--spatial-tensor", default="", help="frozen_graph: the feature map the bottleneck "
                      "globally averages (default: the input of the bottleneck's pooling op)")
    args = parser.parse_args(argv)
    if args.command == "untrained":
        make_untrained_inception_v3(args.output, args.seed, args.size)
        print(f"wrote {args.output} ({UNTRAINED_NOTE})")
        return
    width = prepare(args.kind, args.source, args.output_pb, args.output_json, args.input_size,
                    args.input_range, args.untrained, args.graph_member or None,
                    args.input_tensor or None, args.bottleneck_tensor or None, args.extra_endpoints,
                    args.spatial_tensor or None)
    print(f"wrote {args.output_pb}: features of {width} values")


if __name__ == "__main__":
    run_cli(main)
