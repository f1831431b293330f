"""Backbones: turn a checkpoint or frozen graph into one frozen bottleneck graph.

Whatever the source, the `backbone` stage writes ``backbone.pb`` (a GraphDef whose
Placeholder takes a [N, size, size, 3] float batch in the backbone's value range and
ends at the bottleneck tensor) and ``backbone.json`` (tensor names, input contract,
bottleneck size, provenance). Bottlenecks, freezing and IR conversion read only those.

Entry points:
    python -m scripts.backbone untrained --output inception_v3_untrained.tar.gz --seed 0
    python -m scripts.backbone prepare --kind inception_v3 --source DIR_OR_FILE ...
    python -m scripts.backbone ir --backbone-pb P --backbone-json J --output-xml X
"""
import argparse
import glob
import io
import os
import tarfile
import tempfile

from scripts import atomic, tfcompat
from scripts.core.errors import PipelineError, run_cli

INCEPTION_V3_SCOPE = "InceptionV3"
# TF-Slim's PreLogits end point: the 8x8 average pool, 2048 channels.
INCEPTION_V3_BOTTLENECK = "InceptionV3/Logits/AvgPool_1a_8x8/AvgPool"
INCEPTION_V3_CLASSES = 1001  # the official checkpoint's ImageNet head (with background)
CHECKPOINT_NAME = "inception_v3.ckpt"  # the name inside the official tarball
UNTRAINED_NOTE = "untrained backbone"


def build_inception_v3(tf, size):
    """Inception V3 in inference mode on a new 'input' Placeholder; returns (input, bottleneck)."""
    slim = tfcompat.tf_slim()
    inception_v3 = tfcompat.inception_v3_module()
    images = tf.placeholder(tf.float32, [None, size, size, 3], name="input")
    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        _, end_points = inception_v3.inception_v3(
            images, num_classes=INCEPTION_V3_CLASSES, is_training=False)
    return images, end_points["PreLogits"]


def make_untrained_inception_v3(output_tar, seed=0, size=299):
    """A randomly initialised Inception V3 in the official checkpoint's format.

    The official ``inception_v3_2016_08_28.tar.gz`` holds one V1-format file,
    ``inception_v3.ckpt``; this writes the same, so the same loading code is tested.
    """
    from tensorflow.core.protobuf import saver_pb2
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        build_inception_v3(tf, size)
        saver = tf.train.Saver(write_version=saver_pb2.SaverDef.V1)
        with tf.Session() as session, tempfile.TemporaryDirectory() as folder:
            session.run(tf.global_variables_initializer())
            checkpoint = os.path.join(folder, CHECKPOINT_NAME)
            saver.save(session, checkpoint, write_meta_graph=False)
            note = f"{UNTRAINED_NOTE}: random initialisation, seed {seed}\n".encode()
            with atomic.atomic_path(output_tar) as temp, tarfile.open(temp, "w:gz") as tar:
                tar.add(checkpoint, arcname=CHECKPOINT_NAME)
                info = tarfile.TarInfo("UNTRAINED_BACKBONE.txt")
                info.size = len(note)
                tar.addfile(info, io.BytesIO(note))


def find_checkpoint(source):
    """The checkpoint prefix inside an unpacked folder, or the given .ckpt path."""
    if os.path.isfile(source) or glob.glob(source + ".index"):
        return source
    candidates = sorted(glob.glob(os.path.join(source, "**", "*.ckpt"), recursive=True))
    candidates += sorted(path[:-len(".index")] for path in
                         glob.glob(os.path.join(source, "**", "*.ckpt.index"), recursive=True))
    if not candidates:
        raise PipelineError(f"{source}: no Inception V3 checkpoint (*.ckpt) found (backbone.source)")
    return candidates[0]


def freeze_inception_v3(checkpoint, size):
    """Restore everything but the ImageNet heads and freeze up to PreLogits."""
    tf = tfcompat.tf_v1()
    slim = tfcompat.tf_slim()
    graph = tf.Graph()
    with graph.as_default():
        build_inception_v3(tf, size)
        variables = slim.get_variables_to_restore(
            exclude=[f"{INCEPTION_V3_SCOPE}/Logits", f"{INCEPTION_V3_SCOPE}/AuxLogits"])
        saver = tf.train.Saver(variables)
        with tf.Session() as session:
            try:
                saver.restore(session, checkpoint)
            except (tf.errors.OpError, ValueError) as error:
                first_line = str(error).strip().splitlines()[0]
                raise PipelineError(f"{checkpoint}: not an Inception V3 checkpoint ({first_line})")
            return tf.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [INCEPTION_V3_BOTTLENECK])


def load_graph_def(path):
    tf = tfcompat.tf_v1()
    graph_def = tf.GraphDef()
    try:
        with open(path, "rb") as handle:
            graph_def.ParseFromString(handle.read())
    except Exception as error:  # protobuf raises its own DecodeError
        raise PipelineError(f"{path}: not a frozen TensorFlow GraphDef ({error})")
    return graph_def


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


def _node_name(tensor_name):
    return tensor_name.split(":")[0]


def cut_frozen_graph(graph_def, input_tensor, bottleneck_tensor):
    """Keep the nodes from the input to the bottleneck, with a free batch dimension."""
    tf = tfcompat.tf_v1()
    names = {node.name for node in graph_def.node}
    for key, tensor in (("input_tensor", input_tensor), ("bottleneck_tensor", bottleneck_tensor)):
        if _node_name(tensor) not in names:
            raise PipelineError(f"config key backbone.{key}: the graph has no node {_node_name(tensor)!r}")
    graph_def = tf.graph_util.extract_sub_graph(graph_def, [_node_name(bottleneck_tensor)])
    for node in graph_def.node:
        if node.name == _node_name(input_tensor) and "shape" in node.attr:
            dims = node.attr["shape"].shape.dim
            if dims:
                dims[0].size = -1  # many frozen graphs fix the batch at 1
    return graph_def


def bottleneck_size(graph_def, input_tensor, bottleneck_tensor, size):
    """Run one zero image through the graph to learn the bottleneck's width."""
    import numpy as np
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph) as session:
            value = session.run(_tensor(bottleneck_tensor),
                                {_tensor(input_tensor): np.zeros((1, size, size, 3), np.float32)})
    return int(np.prod(value.shape[1:]))


def _tensor(name):
    return name if ":" in name else name + ":0"


def prepare(kind, source, output_pb, output_json, input_size, input_range, untrained,
            graph_member=None, input_tensor=None, bottleneck_tensor=None):
    """Write backbone.pb and backbone.json from a checkpoint or a frozen graph."""
    if kind == "inception_v3":
        graph_def = freeze_inception_v3(find_checkpoint(source), input_size)
        input_tensor, bottleneck_tensor = "input:0", INCEPTION_V3_BOTTLENECK + ":0"
    else:
        graph_def = cut_frozen_graph(load_graph_def(find_graph(source, graph_member)),
                                     input_tensor, bottleneck_tensor)
        input_tensor, bottleneck_tensor = _tensor(input_tensor), _tensor(bottleneck_tensor)
    width = bottleneck_size(graph_def, input_tensor, bottleneck_tensor, input_size)
    atomic.write_bytes(output_pb, graph_def.SerializeToString())
    atomic.write_json(output_json, {
        "kind": kind,
        "input_tensor": input_tensor,
        "bottleneck_tensor": bottleneck_tensor,
        "bottleneck_size": width,
        "input_size": input_size,
        "input_range": list(input_range),
        "untrained": bool(untrained),
        "note": UNTRAINED_NOTE if untrained else "",
        "nodes": len(graph_def.node),
    })
    return width


def convert_to_ir(backbone_pb, backbone_json, output_xml):
    """The backbone as OpenVINO IR (FP32, batch 1) for the `openvino` bottleneck backend."""
    import openvino as ov
    info = atomic.read_json(backbone_json)
    size = info["input_size"]
    # backbone.pb has exactly one Placeholder and ends at the bottleneck.
    model = ov.convert_model(backbone_pb, input=[1, size, size, 3])
    folder = os.path.dirname(os.path.abspath(output_xml))
    name = os.path.splitext(os.path.basename(output_xml))[0]
    # Save xml + bin together in a temporary folder, then move the bin first: an xml
    # never stands under its final name without its weights.
    with tempfile.TemporaryDirectory(dir=folder) as temp:
        ov.save_model(model, os.path.join(temp, name + ".xml"), compress_to_fp16=False)
        os.replace(os.path.join(temp, name + ".bin"), os.path.join(folder, name + ".bin"))
        os.replace(os.path.join(temp, name + ".xml"), output_xml)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Prepare a backbone as one frozen bottleneck graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    untrained = commands.add_parser("untrained", help="write a randomly initialised Inception V3 "
                                    "checkpoint archive in the official format")
    untrained.add_argument("--output", required=True, help=".tar.gz to write")
    untrained.add_argument("--seed", type=int, default=0)
    untrained.add_argument("--size", type=int, default=299)
    prep = commands.add_parser("prepare", help="write backbone.pb and backbone.json")
    prep.add_argument("--kind", choices=["inception_v3", "frozen_graph"], required=True)
    prep.add_argument("--source", required=True, help="unpacked folder, .ckpt or .pb")
    prep.add_argument("--output-pb", required=True)
    prep.add_argument("--output-json", required=True)
    prep.add_argument("--input-size", type=int, required=True)
    prep.add_argument("--input-range", type=float, nargs=2, default=[-1.0, 1.0])
    prep.add_argument("--untrained", action="store_true", help="mark outputs 'untrained backbone'")
    prep.add_argument("--graph-member", default="", help="frozen_graph: the .pb inside the archive")
    prep.add_argument("--input-tensor", default="", help="frozen_graph: input tensor name")
    prep.add_argument("--bottleneck-tensor", default="", help="frozen_graph: bottleneck tensor name")
    to_ir = commands.add_parser("ir", help="convert backbone.pb to OpenVINO IR (openvino backend)")
    to_ir.add_argument("--backbone-pb", required=True)
    to_ir.add_argument("--backbone-json", required=True)
    to_ir.add_argument("--output-xml", required=True, help="the .bin is written beside it")
    args = parser.parse_args(argv)
    if args.command == "ir":
        convert_to_ir(args.backbone_pb, args.backbone_json, args.output_xml)
        print(f"wrote {args.output_xml}")
        return
    if args.command == "untrained":
        make_untrained_inception_v3(args.output, args.seed, args.size)
        print(f"wrote {args.output} ({UNTRAINED_NOTE})")
        return
    width = prepare(args.kind, args.source, args.output_pb, args.output_json, args.input_size,
                    args.input_range, args.untrained, args.graph_member or None,
                    args.input_tensor or None, args.bottleneck_tensor or None)
    print(f"wrote {args.output_pb}: bottleneck of {width} values")


if __name__ == "__main__":
    run_cli(main)
