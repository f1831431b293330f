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
import functools
import os
import sys
import tarfile
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.freeze import FrozenModel, build_frozen_graph  # noqa: E402

from scripts import atomic, backbone, benchmark, ir, synthetic  # noqa: E402
from scripts.core.images import preprocess_image, preprocessing_contract  # noqa: E402

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


def tensorflow_engine(model_pb, batch, threads):
    """{mode: run(seconds) -> (latencies in ms, images, wall seconds)} of the frozen .pb."""
    model = FrozenModel(model_pb, threads)
    rng = np.random.default_rng(0)
    single = rng.uniform(*INPUT_RANGE, (1, SIZE, SIZE, 3)).astype(np.float32)
    many = rng.uniform(*INPUT_RANGE, (batch, SIZE, SIZE, 3)).astype(np.float32)
    model(single), model(many)  # warm-up: the first runs allocate

    def latency(seconds):
        latencies, started = [], time.perf_counter()
        for _ in benchmark.for_seconds(seconds):
            begun = time.perf_counter()
            model(single)
            latencies.append(1000 * (time.perf_counter() - begun))
        return latencies, len(latencies), time.perf_counter() - started

    def throughput(seconds):
        images, started = 0, time.perf_counter()
        for _ in benchmark.for_seconds(seconds):
            model(many)
            images += batch
        return [], images, time.perf_counter() - started

    return {"latency": latency, "throughput": throughput}


def openvino_engine(ir_xml, threads):
    """The same for one IR, compiled once per mode as scripts/benchmark.py compiles it."""
    import openvino as ov
    core, runs = ov.Core(), {}
    for mode, measure_mode in benchmark.MEASURE.items():
        compiled = ir.compile_ir(core, ir_xml, "CPU", benchmark.MODES[mode], threads)
        runs[mode] = functools.partial(_openvino_run, measure_mode, compiled, benchmark.random_input(compiled))
    return runs


def _openvino_run(measure_mode, compiled, pixels, seconds):
    latencies, elapsed, _ = measure_mode(compiled, pixels, seconds)
    return latencies, len(latencies), elapsed


def interleaved(engines, seconds, rounds):
    """{name: (latency statistics, images/s)}, each engine measured in turn, ``rounds`` times.

    Taking turns spreads the load of a shared machine over every engine alike.
    """
    latencies = {name: [] for name in engines}
    images, elapsed = dict.fromkeys(engines, 0), dict.fromkeys(engines, 0.0)
    for _ in range(rounds):
        for name, runs in engines.items():
            latencies[name] += runs["latency"](seconds / rounds)[0]
            _, count, wall = runs["throughput"](seconds / rounds)
            images[name] += count
            elapsed[name] += wall
    return {name: (benchmark.latency_summary(latencies[name]), images[name] / elapsed[name]) for name in engines}


def table(speeds, reference):
    """Median and p90 latency, throughput, and both as multiples of ``reference``'s."""
    ref_latency, ref_fps = speeds[reference]
    lines = [f"{'engine':<16}{'median ms':>11}{'p90 ms':>9}{'images/s':>10}{'latency x TF':>14}"
             f"{'throughput x TF':>17}"]
    for name, (latency, fps) in speeds.items():
        lines.append(f"{name:<16}{latency['median']:>11.1f}{latency['p90']:>9.1f}{fps:>10.1f}"
                     f"{ref_latency['median'] / latency['median']:>13.2f}x{fps / ref_fps:>16.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="measuring time per engine and mode (default 5)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="turns the engines take, each measuring seconds/rounds (default 5)")
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
        engines = {"TensorFlow .pb": tensorflow_engine(model_pb, args.tf_batch, args.threads)}
        for precision in ir.PRECISIONS:
            print(f"converting to {precision}", flush=True)
            model = ir.convert(model_pb, contract, precision, calibration if precision == "INT8" else None)
            out_dir = os.path.join(folder, "ir", precision)
            ir.save_ir(model, contract, precision, out_dir, len(calibration) if precision == "INT8" else 0)
            engines[f"OpenVINO {precision}"] = openvino_engine(os.path.join(out_dir, "model.xml"), args.threads)
        print(f"measuring, {args.rounds} rounds", flush=True)
        speeds = interleaved(engines, args.seconds, args.rounds)
    import openvino as ov
    print(f"\nInception V3 {SIZE}x{SIZE}, untrained backbone (random weights: speed only, no accuracy); "
          f"CPU {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, {args.threads} threads, "
          f"{args.seconds:g} s per engine and mode in {args.rounds} turns; OpenVINO {ov.__version__.split('-')[0]}")
    print(f"latency: batch 1, one synchronous request; throughput: OpenVINO async requests (batch 1), "
          f"TensorFlow batches of {args.tf_batch}; x TF: how many times faster than TensorFlow")
    print(table(speeds, "TensorFlow .pb"))


if __name__ == "__main__":
    main()
