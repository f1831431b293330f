"""Benchmarks on the real OpenVINO CPU plugin, with a tiny IR so that 0.5 s measures enough."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from scripts.core import atomic, formats
from scripts.core.errors import PipelineError
from scripts.deploy import benchmark

SECONDS = 0.5


def ir_json(xml):
    return os.path.join(os.path.dirname(xml), "ir.json")


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    """A real IR (mean colour -> dense -> softmax over 3 labels) and its ir.json."""
    import openvino as ov
    import openvino.opset13 as ops
    image = ops.parameter([1, 16, 16, 3], np.float32, name="input")
    colour = ops.reduce_mean(image, ops.constant(np.array([1, 2], np.int64)), keep_dims=False)
    weights = ops.constant(np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32))
    model = ov.Model([ops.softmax(ops.matmul(colour, weights, False, False), 1)], [image], "tiny")
    folder = tmp_path_factory.mktemp("tiny") / "ir" / "FP32"
    formats.write_ir(model, str(folder / "model.xml"))
    atomic.write_json(folder / "ir.json", {"precision": "FP32", "labels": ["a", "b", "c"],
                                           "untrained_backbone": True, "note": "untrained backbone"})
    return str(folder / "model.xml")


def test_cpu_benchmark_measures_both_modes(tiny_ir, tmp_path):
    output = tmp_path / "CPU-FP32.json"
    result = benchmark.benchmark(tiny_ir, ir_json(tiny_ir), "CPU", ["latency", "throughput"], SECONDS, str(output),
                                 False, None)
    assert atomic.read_json(output) == result
    assert result["skipped"] is False and result["full_device_name"]
    assert result["precision"] == "FP32" and result["note"] == "untrained backbone"
    assert set(result["modes"]) == {"latency", "throughput"}
    for mode, measured in result["modes"].items():
        latency = measured["latency_ms"]
        assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"], mode
        assert latency["min"] <= latency["mean"] <= latency["max"]
        assert measured["iterations"] > 10 and measured["throughput_fps"] > 0
        assert measured["elapsed_seconds"] >= SECONDS and measured["inference_precision"] == "f32"
        assert measured["streams"] >= 1
    assert result["modes"]["latency"]["requests"] == 1
    assert result["cpu"]["inference_precision"] == "f32" and result["cpu"]["kernels"]
    assert result["modes"]["latency"]["performance_hint"] == "LATENCY"
    assert result["modes"]["throughput"]["performance_hint"] == "THROUGHPUT"


def test_an_absent_device_fails_with_one_line_listing_the_devices(tiny_ir, tmp_path):
    output = tmp_path / "MYRIAD-FP32.json"
    with pytest.raises(PipelineError) as failure:
        benchmark.benchmark(tiny_ir, ir_json(tiny_ir), "MYRIAD", ["latency"], SECONDS, str(output), False, None)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("config key benchmark.devices: device MYRIAD")
    assert "which has: CPU" in message and "2022.3" in message and "skip_absent_devices" in message
    assert not output.exists()


def test_an_unknown_device_gets_the_generic_advice():
    reason = benchmark.absent_device_reason("FOO", ["CPU", "GPU.0"])
    assert "CPU, GPU.0" in reason and "available_devices" in reason
    assert benchmark.device_available("GPU", ["CPU", "GPU.0"])
    assert not benchmark.device_available("NPU", ["CPU", "GPU.0"])


def test_skip_absent_devices_writes_a_skipped_result(tiny_ir, tmp_path):
    output = tmp_path / "NPU-FP32.json"
    result = benchmark.benchmark(tiny_ir, ir_json(tiny_ir), "MYRIAD", ["latency", "throughput"], SECONDS, str(output),
                                 True, None)
    written = atomic.read_json(output)
    assert written == result and written["skipped"] is True and written["modes"] == {}
    assert "CPU" in written["reason"] and written["full_device_name"] is None


def test_gather_writes_a_row_per_device_precision_and_mode(tiny_ir, tmp_path):
    cpu, myriad = str(tmp_path / "CPU-FP32.json"), str(tmp_path / "MYRIAD-FP32.json")
    benchmark.benchmark(tiny_ir, ir_json(tiny_ir), "CPU", ["latency", "throughput"], SECONDS, cpu, False, None)
    benchmark.benchmark(tiny_ir, ir_json(tiny_ir), "MYRIAD", ["latency"], SECONDS, myriad, True, None)
    benchmark.gather([cpu, myriad], str(tmp_path / "benchmarks.csv"), str(tmp_path / "benchmarks.json"))
    with open(tmp_path / "benchmarks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["device"], row["mode"], row["skipped"]) for row in rows] == [
        ("CPU", "latency", "False"), ("CPU", "throughput", "False"), ("MYRIAD", "", "True")]
    assert float(rows[0]["latency_median_ms"]) > 0 and rows[2]["latency_median_ms"] == ""
    gathered = atomic.read_json(tmp_path / "benchmarks.json")
    assert len(gathered["rows"]) == 3 and gathered["note"] == "untrained backbone"
    assert gathered["rows"][2]["latency_median_ms"] is None and set(gathered["rows"][0]) == set(rows[0])


def test_command_line_prints_one_error_line_for_an_absent_device(tiny_ir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "scripts.deploy.benchmark", "run", "--ir-xml", tiny_ir,
                             "--ir-json", ir_json(tiny_ir), "--threads", "0",
                             "--device", "MYRIAD", "--modes", "latency", "--seconds", str(SECONDS),
                             "--output", str(tmp_path / "out.json")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and not os.path.exists(tmp_path / "out.json")
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key benchmark.devices: device MYRIAD")
