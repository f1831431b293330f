"""Full-size Inception V3 on this machine's CPU: OpenVINO IR (FP32, FP16, INT8) vs TensorFlow.

In one run: build an untrained (randomly initialised) Inception V3 at 299x299, add a
random softmax head, freeze it as the pipeline does, convert it to IR at each precision
(INT8 calibrated on synthetic images), and print latency and throughput side by side
with TensorFlow's on the frozen .pb. Random weights make the speed real and the
predictions meaningless: the output says "untrained backbone".

    python bench/bench_inception_ir.py --seconds 5

OpenVINO modes are those of the pipeline's benchmark stage (scripts/benchmark.py):
latency = one synchronous request, throughput = the CPU's optimal number of
asynchronous requests. TensorFlow: latency = batch 1, throughput = batches of
--tf-batch, with as many threads as the CPU has.
"""
import argparse
import os
import sys
import tarfile
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts import atomic, backbone, benchmark, ir, synthetic  # noqa: E402
from scripts.freeze import FrozenModel, build_frozen_graph  # noqa: E402
from scripts.preprocess import preprocess_image, preprocessing_contract  # noqa: E402

SIZE = 299
INPUT_RANGE = (-1.0, 1.0)
LABELS = ["circle", "square", "triangle"]


def frozen_inception_v3(folder, seed):
    """frozen_model.pb + model.json: untrained Inception V3 and a random head, as `freeze` writes them."""
    archive = os.path.join(folder, "inception_v3_untrained.tar.gz")
    backbone.make_untrained_inception_v3(archive, seed, SIZE)
    unpacked = os.path.join(folder, "unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    backbone_pb, backbone_json = os.path.join(folder, "backbone.pb"), os.path.join(folder, "backbone.json")
    width = backbone.prepare("inception_v3", unpacked, backbone_pb, backbone_json, SIZE, INPUT_RANGE,
                             untrained=True)
    rng = np.random.default_rng(seed)
    head = {"mean": np.zeros(width, np.float32), "scale": np.ones(width, np.float32),
            "logits_w": rng.normal(0, width ** -0.5, (width, len(LABELS))).astype(np.float32),
            "logits_b": np.zeros(len(LABELS), np.float32)}
    graph_def = build_frozen_graph(backbone.load_graph_def(backbone_pb), atomic.read_json(backbone_json), head)
    model_pb = os.path.join(folder, "model", "frozen_model.pb")
    atomic.write_bytes(model_pb, graph_def.SerializeToString())
    contract = {"preprocessing": preprocessing_contract(SIZE, INPUT_RANGE), "labels": LABELS,
                "untrained_backbone": True, "note": backbone.UNTRAINED_NOTE}
    atomic.write_json(os.path.join(folder, "model", "model.json"), contract)
    return model_pb, contract


def synthetic_calibration(folder, count, seed):
    """``count`` drawn shape images, preprocessed, each [1, S, S, 3]."""
    images_dir = os.path.join(folder, "calibration")
    per_class = -(-count // len(LABELS))
    synthetic.generate(images_dir, len(LABELS), per_class, 128, seed)
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(images_dir) for name in names)
    return [preprocess_image(path, SIZE, INPUT_RANGE)[None] for path in paths[:count]]


def tensorflow_speed(model_pb, seconds, batch, threads):
    """TensorFlow's latency (batch 1) and throughput (batches of ``batch``) on the frozen .pb."""
    model = FrozenModel(model_pb, threads)
    rng = np.random.default_rng(0)
    single = rng.uniform(*INPUT_RANGE, (1, SIZE, SIZE, 3)).astype(np.float32)
    many = rng.uniform(*INPUT_RANGE, (batch, SIZE, SIZE, 3)).astype(np.float32)
    model(single), model(many)  # warm-up: the first runs allocate
    latencies = []

    def one():
        started = time.perf_counter()
        model(single)
        latencies.append(1000 * (time.perf_counter() - started))

    benchmark.run_for(seconds, one)
    batches = []
    elapsed = benchmark.run_for(seconds, lambda: batches.append(model(many)))
    return benchmark.latency_summary(latencies), len(batches) * batch / elapsed


def openvino_speed(ir_xml, seconds, threads):
    """(latency statistics, images/s) in the pipeline's latency and throughput modes."""
    import openvino as ov
    core = ov.Core()
    latency = benchmark.measure(core, ir_xml, "CPU", "latency", seconds, threads)
    throughput = benchmark.measure(core, ir_xml, "CPU", "throughput", seconds, threads)
    return latency["latency_ms"], throughput["throughput_fps"]


def table(rows, tf_latency, tf_fps):
    lines = [f"{'engine':<16}{'median ms':>11}{'p90 ms':>9}{'images/s':>10}{'latency x TF':>14}"
             f"{'throughput x TF':>17}"]
    for name, latency, fps in rows:
        lines.append(f"{name:<16}{latency['median']:>11.1f}{latency['p90']:>9.1f}{fps:>10.1f}"
                     f"{tf_latency['median'] / latency['median']:>13.2f}x{fps / tf_fps:>16.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="measuring time per engine and mode (default 5)")
    parser.add_argument("--calibration-images", type=int, default=32, help="synthetic images for INT8 (default 32)")
    parser.add_argument("--tf-batch", type=int, default=8, help="TensorFlow's throughput batch size (default 8)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all)")
    parser.add_argument("--out-dir", help="keep the models here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_inception_ir-") as temp:
        folder = args.out_dir or temp
        print(f"building untrained backbone Inception V3 ({SIZE}x{SIZE}) + random {len(LABELS)}-class head "
              f"in {folder}", flush=True)
        model_pb, contract = frozen_inception_v3(folder, args.seed)
        calibration = synthetic_calibration(folder, args.calibration_images, args.seed)
        rows = []
        for precision in ir.PRECISIONS:
            print(f"converting and measuring {precision}", flush=True)
            model = ir.convert(model_pb, contract, precision, calibration if precision == "INT8" else None)
            out_dir = os.path.join(folder, "ir", precision)
            ir.save_ir(model, contract, precision, out_dir, len(calibration) if precision == "INT8" else 0)
            rows.append((f"OpenVINO {precision}", *openvino_speed(os.path.join(out_dir, "model.xml"),
                                                                  args.seconds, args.threads)))
        print("measuring TensorFlow", flush=True)
        tf_latency, tf_fps = tensorflow_speed(model_pb, args.seconds, args.tf_batch, args.threads)
    import openvino as ov
    print(f"\nInception V3 {SIZE}x{SIZE}, untrained backbone (random weights: speed only, no accuracy); "
          f"CPU {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, {args.threads} threads, "
          f"{args.seconds:g} s per measurement; OpenVINO {ov.__version__.split('-')[0]}")
    print(f"latency: batch 1, one synchronous request; throughput: OpenVINO async requests (batch 1), "
          f"TensorFlow batches of {args.tf_batch}; x TF: how many times faster than TensorFlow")
    print(table([("TensorFlow .pb", tf_latency, tf_fps)] + rows, tf_latency, tf_fps))


if __name__ == "__main__":
    main()
