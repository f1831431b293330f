"""Bottleneck throughput of both backends, measured side by side in one run.

For each backbone (full-size Inception V3 with untrained weights, and the real
MobileNet V1 0.25 frozen graph from ../shared/data/weights) and each backend
(tensorflow, openvino) this prints images/s for:
  - decode+preprocess alone (the producer threads),
  - inference alone on already preprocessed batches,
  - the real pipeline (scripts/bottlenecks.compute_shard: both overlapped),
plus the peak resident memory of a shard job for two shard sizes, to show it follows the
batch, not the shard. Speed of the untrained backbone equals the trained one's (same
graph, same ops); its features are meaningless ("untrained backbone").

    python bench/bench_bottlenecks.py [--images 96] [--threads 2] [--batch-size 32]
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from scripts import atomic, backbone, bottlenecks, synthetic, tfrecords  # noqa: E402
from scripts.core.images import preprocess_image  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
MOBILENET = os.path.join(SHARED, "weights", "mobilenet_v1_0.25_224_frozen.tgz")


def make_tfrecord(folder, images, size):
    synthetic.generate(os.path.join(folder, "images"), 3, images // 3, size, 0)
    rows = []
    for label_index, label in enumerate(sorted(os.listdir(os.path.join(folder, "images")))):
        for name in sorted(os.listdir(os.path.join(folder, "images", label))):
            path = os.path.join(folder, "images", label, name)
            with open(path, "rb") as handle:
                rows.append({"path": path, "label_index": label_index, "height": size, "width": size,
                             "sha256": hashlib.sha256(handle.read()).hexdigest()})
    record = os.path.join(folder, f"shard-{images}.tfrecord")
    tfrecords.write_shard(rows, record)
    return record


def prepare_backbones(folder):
    inception = os.path.join(folder, "inception")
    archive = os.path.join(folder, "inception_v3_untrained.tar.gz")
    backbone.make_untrained_inception_v3(archive, seed=0)
    with tarfile.open(archive) as tar:
        tar.extractall(inception, filter="data")
    backbone.prepare("inception_v3", inception, f"{inception}.pb", f"{inception}.json", 299, (-1, 1), True)
    mobilenet = os.path.join(folder, "mobilenet")
    with tarfile.open(MOBILENET) as tar:
        tar.extractall(mobilenet, filter="data")
    backbone.prepare("frozen_graph", mobilenet, f"{mobilenet}.pb", f"{mobilenet}.json", 224, (-1, 1), False,
                     "mobilenet_v1_0.25_224/frozen_graph.pb", "input", "MobilenetV1/Logits/AvgPool_1a/AvgPool")
    for name in (inception, mobilenet):
        backbone.convert_to_ir(f"{name}.pb", f"{name}.json", f"{name}.xml")
    return {"Inception V3 299 (untrained backbone)": inception, "MobileNet V1 0.25 224": mobilenet}


def rate(count, seconds):
    return count / seconds if seconds else float("inf")


def preprocess_rate(record, info, threads, batch_size):
    examples = list(tfrecords.read_examples([record]))
    started = time.perf_counter()
    for _ in bottlenecks.preprocessed_batches(iter(examples), info, batch_size, threads):
        pass
    return rate(len(examples), time.perf_counter() - started)


def inference_rate(run, record, info, batch_size):
    size, value_range = info["input_size"], tuple(info["input_range"])
    pixels = np.stack([preprocess_image(example["encoded"], size, value_range)
                       for example in tfrecords.read_examples([record])])
    run(pixels[:batch_size])  # warm-up: first-run graph optimisation is not throughput
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        run(pixels[start:start + batch_size])
    return rate(len(pixels), time.perf_counter() - started)


def pipeline_rate(run, record, info, batch_size, threads):
    examples = list(tfrecords.read_examples([record]))
    started = time.perf_counter()
    for pixels, _ in bottlenecks.preprocessed_batches(iter(examples), info, batch_size, threads):
        run(pixels)
    return rate(len(examples), time.perf_counter() - started)


# VmHWM (not ru_maxrss, which a child inherits from its parent across fork) is the
# child's own peak resident memory.
_MEASURE_CHILD = """
import runpy, sys
sys.argv = ["bottlenecks"] + sys.argv[1:]
runpy.run_module("scripts.bottlenecks", run_name="__main__")
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print("peak_kb", peak)
"""


def peak_memory_mb(prefix, backend, record, threads, batch_size):
    """Peak RSS of a real shard job (its own process), in MB."""
    output = os.path.join(os.path.dirname(record), f"{backend}-{os.path.basename(record)}.npz")
    arguments = ["shard", "--backbone-pb", f"{prefix}.pb", "--backbone-json", f"{prefix}.json",
                 "--tfrecord", record, "--output", output, "--batch-size", str(batch_size),
                 "--threads", str(threads), "--backend", backend, f"--ir-xml={prefix}.xml"]
    result = subprocess.run([sys.executable, "-c", _MEASURE_CHILD, *arguments], check=True, cwd=REPO,
                            capture_output=True, text=True)
    return int(result.stdout.split("peak_kb")[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images per measurement (default 96)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        prefixes = prepare_backbones(folder)
        print(f"{args.images} images per measurement, {args.threads} threads, batch {args.batch_size}\n")
        header = f"{'backbone':40} {'backend':11} {'preprocess':>11} {'inference':>10} {'pipeline':>9}  (images/s)"
        print(header)
        for title, prefix in prefixes.items():
            info = atomic.read_json(f"{prefix}.json")
            record = make_tfrecord(os.path.join(folder, title.split()[0]), args.images, 224)
            rates = {}
            for backend in ("tensorflow", "openvino"):
                run = bottlenecks.make_backbone(backend, f"{prefix}.pb", info, args.threads, f"{prefix}.xml")
                prep = preprocess_rate(record, info, args.threads, args.batch_size)
                infer = inference_rate(run, record, info, args.batch_size)
                rates[backend] = pipeline_rate(run, record, info, args.batch_size, args.threads)
                print(f"{title:40} {backend:11} {prep:11.1f} {infer:10.1f} {rates[backend]:9.1f}")
                del run
            print(f"{title:40} openvino / tensorflow pipeline speed: {rates['openvino'] / rates['tensorflow']:.2f}x\n")
        prefix = prefixes["MobileNet V1 0.25 224"]
        small = make_tfrecord(os.path.join(folder, "mem-small"), 48, 224)
        large = make_tfrecord(os.path.join(folder, "mem-large"), 480, 224)
        print("peak memory of one shard job (MobileNet, batch 16):")
        for backend in ("tensorflow", "openvino"):
            small_mb = peak_memory_mb(prefix, backend, small, args.threads, 16)
            large_mb = peak_memory_mb(prefix, backend, large, args.threads, 16)
            print(f"  {backend:11} 48 images: {small_mb:7.0f} MB   480 images: {large_mb:7.0f} MB")


if __name__ == "__main__":
    main()
