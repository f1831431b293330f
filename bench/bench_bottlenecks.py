"""Feature (bottleneck) throughput of each engine, measured side by side in one run.

For each backbone (full-size Inception V3 with untrained weights, the real ImageNet
Inception V3 up to mixed_8 and the real MobileNet V1 0.25, both frozen graphs from
../shared/data/weights, through their registry presets) and each engine the pipeline can
compute features with (TensorFlow FP32 on backbone.pb; OpenVINO FP32, FP16 and INT8 on
the backbone IRs, INT8 quantized by NNCF as the `backbone_ir` rule does), this
prints images/s for:
  - inference alone on already preprocessed images,
  - the real pipeline (scripts/core/inference.py: decoding overlapped with inference),
then the peak resident memory of a shard job for two shard sizes, to show it follows the
batch, not the shard. Speed of the untrained backbone equals the trained one's (same
graph, same ops); its features are meaningless ("untrained backbone"). Then, in the same
run, this CPU's INT8/FP32 ceiling on a compute-bound convolution stack (bench/int8_ceiling.py),
the CPU it ran on, and:

    Inception V3 openvino-int8 / tensorflow-fp32 pipeline speed: N.NNx (ceiling on this CPU: M.MMx)

The pipeline speed is meaningful as a fraction of the ceiling, not as a number from one machine.

    python bench/bench_bottlenecks.py [--images 192] [--threads 2] [--batch-size 32] [--only mixed_8]
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
from int8_ceiling import measure as measure_ceiling  # noqa: E402
from mobilenet import MOBILENET, MOBILENET_BOTTLENECK, MOBILENET_MEMBER, manifest_rows  # noqa: E402

from scripts.core import atomic, backbones, cpu, images, records  # noqa: E402
from scripts.core.inference import load_backbone, preprocessed_batches  # noqa: E402
from scripts.data import synthetic, tfrecord_shard  # noqa: E402
from scripts.model import backbone, backbone_ir  # noqa: E402

ENGINES = {"tensorflow-fp32": None, "openvino-fp32": "FP32", "openvino-fp16": "FP16", "openvino-int8": "INT8"}
INCEPTION_MIXED8 = os.path.join(os.path.dirname(REPO), "shared", "data", "weights", "inception_v3_mixed8_frozen.pb")
CALIBRATION_IMAGES = 60


def make_tfrecord(folder, count, size=224):
    synthetic.generate(os.path.join(folder, "images"), 3, count // 3, size, 0)
    labels = sorted(os.listdir(os.path.join(folder, "images")))
    record = os.path.join(folder, f"shard-{count}.tfrecord")
    tfrecord_shard.write_shard(manifest_rows(os.path.join(folder, "images"), labels), record)
    return record


def prepare_backbones(folder):
    inception = os.path.join(folder, "inception")
    archive = os.path.join(folder, "inception_v3_untrained.tar.gz")
    backbone.make_untrained_inception_v3(archive, seed=0, size=299)
    with tarfile.open(archive) as tar:
        tar.extractall(inception, filter="data")
    backbone.prepare("inception_v3", inception, f"{inception}.pb", f"{inception}.json", 299, (-1, 1), True,
                     None, None, None, [])
    mobilenet = os.path.join(folder, "mobilenet")
    with tarfile.open(MOBILENET) as tar:
        tar.extractall(mobilenet, filter="data")
    backbone.prepare("frozen_graph", mobilenet, f"{mobilenet}.pb", f"{mobilenet}.json", 224, (-1, 1), False,
                     MOBILENET_MEMBER, "input", MOBILENET_BOTTLENECK, [])
    mixed8 = os.path.join(folder, "inception_mixed8")
    preset = backbones.resolve({"preset": "inception_v3_imagenet_mixed8", "source": INCEPTION_MIXED8})
    backbone.prepare("frozen_graph", INCEPTION_MIXED8, f"{mixed8}.pb", f"{mixed8}.json", 299, (-1, 1), False, None,
                     preset["input_tensor"], preset["bottleneck_tensor"], preset["extra_endpoints"])
    return {"Inception V3 299 (untrained backbone)": inception, "MobileNet V1 0.25 224": mobilenet,
            "Inception V3 mixed_8+mixed_7 (ImageNet)": mixed8}


def engine_models(prefix, calibration_record, threads):
    """{engine: model path}: backbone.pb, and the backbone IR at FP32 and INT8."""
    info = atomic.read_json(f"{prefix}.json")
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], 1.0, "bilinear")
    models = {}
    for engine, precision in ENGINES.items():
        if precision is None:
            models[engine] = f"{prefix}.pb"
            continue
        models[engine] = f"{prefix}-{precision}.xml"
        backbone_ir.convert(f"{prefix}.pb", f"{prefix}.json", precision, models[engine], [calibration_record],
                            CALIBRATION_IMAGES, contract, threads)
    return models


def rate(count, seconds):
    return count / seconds if seconds else float("inf")


def inference_rate(run, pixels, batch_size):
    run(pixels[:batch_size])  # warm-up: first-run graph optimisation is not throughput
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        run(pixels[start:start + batch_size])
    return rate(len(pixels), time.perf_counter() - started)


def pipeline_rate(run, record, contract, batch_size, threads):
    examples = list(records.read_examples([record]))
    run(np.zeros((1, contract["input_size"], contract["input_size"], 3), np.float32))  # warm-up
    started = time.perf_counter()
    for pixels, _ in preprocessed_batches(iter(examples), contract, batch_size, threads):
        run(pixels)
    return rate(len(examples), time.perf_counter() - started)


# VmHWM (not ru_maxrss, which a child inherits from its parent across fork) is the
# child's own peak resident memory.
_MEASURE_CHILD = """
import runpy, sys
sys.argv = ["bottlenecks"] + sys.argv[1:]
runpy.run_module("scripts.model.bottlenecks", run_name="__main__")
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print("peak_kb", peak)
"""


def peak_memory_mb(model, backbone_json, record, threads, batch_size):
    """Peak RSS of a real shard job (its own process), in MB."""
    output = f"{record}-{os.path.basename(model)}.npz"
    arguments = ["shard", "--backbone-json", backbone_json, "--model", model, "--tfrecord", record,
                 "--output", output, "--kind", "plain", "--central-fraction", "1.0", "--resize", "bilinear",
                 "--batch-size", str(batch_size), "--threads", str(threads)]
    result = subprocess.run([sys.executable, "-c", _MEASURE_CHILD, *arguments], check=True, cwd=REPO,
                            capture_output=True, text=True)
    return int(result.stdout.split("peak_kb")[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192, help="images per measurement (default 192)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", default="", help="measure only the backbones whose title contains this")
    args = parser.parse_args()
    inception_speed = None
    with tempfile.TemporaryDirectory() as folder:
        prefixes = prepare_backbones(folder)
        print(f"{args.images} images per measurement, {args.threads} threads, batch {args.batch_size}\n")
        print(f"{'backbone':40} {'engine':16} {'inference':>10} {'pipeline':>9}  (images/s)")
        for title, prefix in prefixes.items():
            if args.only not in title:
                continue
            info = atomic.read_json(f"{prefix}.json")
            contract = images.preprocessing_contract(info["input_size"], info["input_range"], 1.0, "bilinear")
            record = make_tfrecord(os.path.join(folder, title.split()[0]), args.images)
            models = engine_models(prefix, record, args.threads)
            pixels = np.stack([images.preprocess_image(example["encoded"], contract)
                               for example in records.read_examples([record])])
            rates = {}
            for engine, model in models.items():
                run = load_backbone(model, info, args.threads)
                infer = inference_rate(run, pixels, args.batch_size)
                rates[engine] = pipeline_rate(run, record, contract, args.batch_size, args.threads)
                print(f"{title:40} {engine:16} {infer:10.1f} {rates[engine]:9.1f}", flush=True)
                del run
            speed = rates["openvino-int8"] / rates["tensorflow-fp32"]
            print(f"{title:40} openvino-int8 / tensorflow-fp32 pipeline speed: {speed:.2f}x\n")
            if "untrained" in title:
                inception_speed = speed
        if args.only:
            return
        prefix = prefixes["MobileNet V1 0.25 224"]
        small = make_tfrecord(os.path.join(folder, "mem-small"), 48)
        large = make_tfrecord(os.path.join(folder, "mem-large"), 480)
        print("peak memory of one shard job (MobileNet, batch 16):")
        for engine, model in engine_models(prefix, small, args.threads).items():
            small_mb = peak_memory_mb(model, f"{prefix}.json", small, args.threads, 16)
            large_mb = peak_memory_mb(model, f"{prefix}.json", large, args.threads, 16)
            print(f"  {engine:16} 48 images: {small_mb:7.0f} MB   480 images: {large_mb:7.0f} MB")
    ceiling = measure_ceiling(3.0, args.threads)
    print(f"\nINT8/FP32 ceiling (conv stack, OpenVINO): FP32 {ceiling['fp32_fps']:.1f}/s, "
          f"INT8 {ceiling['int8_fps']:.1f}/s on {cpu.summary(ceiling['cpu'])}")
    print(f"Inception V3 openvino-int8 / tensorflow-fp32 pipeline speed: {inception_speed:.2f}x "
          f"(ceiling on this CPU: {ceiling['ceiling']:.2f}x)")


if __name__ == "__main__":
    main()
