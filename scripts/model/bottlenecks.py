"""Bottleneck features: one job per TFRecord shard, then one gather per split.

Images are decoded and preprocessed (scripts/preprocess.py) by a pool of threads while
the previous batch runs through the backbone, so decoding does not starve inference.
At most two batches are in flight: peak memory follows the batch size, not the shard.

Backends: ``tensorflow`` runs backbone.pb in a graph-mode session; ``openvino`` runs the
same graph converted to IR (rule `backbone_ir`) with asynchronous infer requests.

Entry points:
    python -m scripts.bottlenecks shard --backbone-pb P --backbone-json J --tfrecord T --output O
    python -m scripts.bottlenecks gather --output O SHARD.npz ...
"""
import argparse
import concurrent.futures
import queue
import sys
import threading
import time

import numpy as np

from scripts import atomic, tfcompat, tfrecords
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import preprocess_image

_DONE = object()


def _batches(examples, batch_size):
    batch = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def preprocessed_batches(examples, info, batch_size, threads):
    """Yield (pixels [B, S, S, 3], examples) while the next batch is being prepared."""
    size, value_range = info["input_size"], tuple(info["input_range"])
    ready = queue.Queue(maxsize=1)  # one batch waiting + one being prepared = bounded memory

    def prepare(example):
        return preprocess_image(example["encoded"], size, value_range)

    def produce():
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for batch in _batches(examples, batch_size):
                    ready.put((np.stack(list(pool.map(prepare, batch))), batch))
            ready.put(_DONE)
        except BaseException as error:  # hand the failure to the consumer
            ready.put(error)

    threading.Thread(target=produce, daemon=True).start()
    while (item := ready.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


class TensorFlowBackbone:
    """backbone.pb in a TensorFlow graph-mode session."""

    def __init__(self, backbone_pb, info, threads):
        from scripts.backbone import load_graph_def
        tf = tfcompat.tf_v1()
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(load_graph_def(backbone_pb), name="")
        session_config = tf.ConfigProto(intra_op_parallelism_threads=threads,
                                        inter_op_parallelism_threads=1)
        self.session = tf.Session(graph=self.graph, config=session_config)
        self.input = self.graph.get_tensor_by_name(info["input_tensor"])
        self.output = self.graph.get_tensor_by_name(info["bottleneck_tensor"])

    def __call__(self, pixels):
        features = self.session.run(self.output, {self.input: pixels})
        return features.reshape(len(pixels), -1)


class OpenVinoBackbone:
    """The backbone IR on the CPU in float32, split over asynchronous infer requests.

    scripts/ir.IrModel collects results without Python callbacks (a callback can
    deadlock OpenVINO 2026.4 when its queue is freed).
    """

    def __init__(self, ir_xml, threads):
        from scripts.ir import IrModel  # imported here: scripts.ir imports this module
        self.model = IrModel(ir_xml, threads)

    def __call__(self, pixels):
        return self.model(pixels).reshape(len(pixels), -1)


def make_backbone(backend, backbone_pb, info, threads, ir_xml=None):
    if backend == "tensorflow":
        return TensorFlowBackbone(backbone_pb, info, threads)
    if backend == "openvino":
        if not ir_xml:
            raise PipelineError("config key bottlenecks.backend: openvino needs the backbone IR (--ir-xml)")
        return OpenVinoBackbone(ir_xml, threads)
    raise PipelineError(f"config key bottlenecks.backend: unknown backend {backend!r}")


def run_over_tfrecords(model, info, tfrecord_paths, batch_size, threads, log=None):
    """Run ``model`` (pixels [B, S, S, 3] -> [B, ...]) over every image of the TFRecords.

    Returns (outputs [N, ...] or None when there are no images, labels, sha256s, file
    names), in TFRecord order; the one loop behind bottlenecks, the freeze check and the
    IR evaluation.
    """
    outputs, labels, hashes, names = [], [], [], []
    started = time.monotonic()
    for pixels, batch in preprocessed_batches(tfrecords.read_examples(tfrecord_paths), info,
                                              batch_size, threads):
        outputs.append(model(pixels))
        labels += [example["label"] for example in batch]
        hashes += [example["sha256"] for example in batch]
        names += [example["filename"] for example in batch]
        if log:
            rate = len(labels) / max(time.monotonic() - started, 1e-9)
            print(f"{len(labels)} images, {rate:.1f} images/s", file=log, flush=True)
    return (np.concatenate(outputs) if outputs else None), labels, hashes, names


def compute_shard(backbone_pb, backbone_json, tfrecord, output, batch_size=32, threads=1,
                  backend="tensorflow", ir_xml=None, log=sys.stdout):
    """Bottlenecks of every image of one shard -> .npz (features, labels, sha256, filenames)."""
    info = atomic.read_json(backbone_json)
    run = make_backbone(backend, backbone_pb, info, threads, ir_xml)
    features, labels, hashes, names = run_over_tfrecords(run, info, [tfrecord], batch_size, threads, log)
    if features is None:
        features = np.zeros((0, info["bottleneck_size"]), np.float32)
    save_bottlenecks(output, features.astype(np.float32), labels, hashes, names)
    return len(labels)


def save_bottlenecks(path, features, labels, hashes, names):
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, features=features, labels=np.asarray(labels, np.int64),
                 sha256=np.asarray(hashes, dtype=str), filenames=np.asarray(names, dtype=str))


def load_bottlenecks(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def gather(shard_paths, output):
    """Concatenate shard files (in the given order) into one split file."""
    parts = [load_bottlenecks(path) for path in shard_paths]
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    save_bottlenecks(output, merged["features"], merged["labels"], merged["sha256"], merged["filenames"])
    return len(merged["labels"])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compute or gather bottleneck features.")
    commands = parser.add_subparsers(dest="command", required=True)
    shard = commands.add_parser("shard", help="bottlenecks of one TFRecord shard")
    shard.add_argument("--backbone-pb", required=True)
    shard.add_argument("--backbone-json", required=True)
    shard.add_argument("--tfrecord", required=True)
    shard.add_argument("--output", required=True, help=".npz to write")
    shard.add_argument("--batch-size", type=int, default=32)
    shard.add_argument("--threads", type=int, default=1)
    shard.add_argument("--backend", choices=["tensorflow", "openvino"], default="tensorflow")
    shard.add_argument("--ir-xml", default="", help="openvino: the backbone IR")
    collect = commands.add_parser("gather", help="concatenate shard .npz files")
    collect.add_argument("--output", required=True)
    collect.add_argument("shards", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "shard":
        count = compute_shard(args.backbone_pb, args.backbone_json, args.tfrecord, args.output,
                              args.batch_size, args.threads, args.backend, args.ir_xml or None)
    else:
        count = gather(args.shards, args.output)
    print(f"wrote {count} bottlenecks to {args.output}")


if __name__ == "__main__":
    run_cli(main)
