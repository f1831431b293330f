"""This CPU's INT8/FP32 speed ceiling in OpenVINO, on a compute-bound convolution stack.

A stack of 3x3 convolutions (128 channels, 28x28, batch 1, no memory-bound layers) is
built with OpenVINO's opset API, once in float32 and once with FakeQuantize on every
convolution's input and weights (as NNCF writes them, so the CPU plugin runs 8-bit
kernels). Both are compiled as the pipeline compiles IRs (f32 inference precision,
THROUGHPUT) and run for the same time; the ratio of their throughputs is the most an
INT8 model can gain over FP32 on this CPU (about 2x without VNNI, 3-4x with it).

    python bench/int8_ceiling.py [--seconds 3] [--threads 2]
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.core import cpu  # noqa: E402
from scripts.core.inference import compile_ir, run_async  # noqa: E402

CHANNELS, SIZE, LAYERS = 128, 28, 8


def fake_quantize(ops, node, low, high, levels=256):
    bounds = [ops.constant(np.array(value, np.float32)) for value in (low, high, low, high)]
    return ops.fake_quantize(node, *bounds, levels)


def conv_stack(int8, seed=0):
    """An ov.Model: LAYERS 3x3 convolutions with ReLU, in FP32 or with 8-bit FakeQuantize."""
    import openvino as ov
    from openvino import opset13 as ops
    rng = np.random.default_rng(seed)
    pixels = ops.parameter([1, CHANNELS, SIZE, SIZE], np.float32, name="input")
    node = pixels
    for _ in range(LAYERS):
        weights = ops.constant((rng.normal(0, 1, (CHANNELS, CHANNELS, 3, 3)) / np.sqrt(9 * CHANNELS)).astype(np.float32))
        if int8:
            node, weights = fake_quantize(ops, node, 0.0, 4.0), fake_quantize(ops, weights, -0.2, 0.2, 255)
        node = ops.relu(ops.convolution(node, weights, [1, 1], [1, 1], [1, 1], [1, 1]))
    return ov.Model([node], [pixels], "int8" if int8 else "fp32")


def throughput(compiled, seconds):
    """Images per second on an AsyncInferQueue kept busy for ``seconds`` (after one warm-up per request)."""
    import openvino as ov
    requests = ov.AsyncInferQueue(compiled)
    pixels = np.random.default_rng(0).uniform(0, 1, (1, CHANNELS, SIZE, SIZE)).astype(np.float32)
    run_async(requests, ((index, {0: pixels}) for index in range(len(requests))), lambda request, job: None)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run_async(requests, ((index, {0: pixels}) for index in range(len(requests))), lambda request, job: None)
        count += len(requests)
    return count / (time.perf_counter() - started)


def measure(seconds=3.0, threads=2):
    """{"fp32_fps", "int8_fps", "ceiling", "cpu"}: the INT8/FP32 throughput ratio on the conv stack."""
    import openvino as ov
    core = ov.Core()
    rates, facts = {}, None
    for name in ("fp32", "int8"):
        compiled = compile_ir(core, conv_stack(name == "int8"), "CPU", "THROUGHPUT", threads)
        rates[name] = throughput(compiled, seconds)
        if name == "int8":
            facts = cpu.description(compiled)
    return {"fp32_fps": rates["fp32"], "int8_fps": rates["int8"], "ceiling": rates["int8"] / rates["fp32"],
            "cpu": facts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = measure(args.seconds, args.threads)
    print(f"conv stack: FP32 {result['fp32_fps']:.1f}/s, INT8 {result['int8_fps']:.1f}/s, "
          f"ceiling {result['ceiling']:.2f}x on {cpu.summary(result['cpu'])}")


if __name__ == "__main__":
    main()
