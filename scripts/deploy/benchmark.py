"""Benchmark one IR on one OpenVINO device, then gather an experiment's benchmarks.

Modes (each measured for ``--seconds`` after one warm-up inference per request):
    latency     PERFORMANCE_HINT LATENCY, one request run synchronously
    throughput  PERFORMANCE_HINT THROUGHPUT, AsyncInferQueue with the device's optimal
                number of requests kept busy
Latencies are the device's own per-request times (InferRequest.latency); throughput is
images per wall-clock second. On the CPU inference runs in float32 (scripts/core/inference.compile_ir);
the CPU, its instruction set and the kernels used are recorded as "cpu" (scripts/core/cpu.py).

    python -m scripts.deploy.benchmark run --ir-xml X --device CPU --modes latency throughput \
        --seconds 5 --output results/default/benchmarks/CPU-FP16.json
    python -m scripts.deploy.benchmark gather --output-csv C --output-json J RUN.json...

A device that OpenVINO does not see fails with one line saying which devices exist and
how to get the one asked for, or, with --skip-absent, is written as "skipped": true.
"""
import argparse
import time

import numpy as np

from scripts.core import atomic, cpu
from scripts.core.contract import note_suffix
from scripts.core.errors import PipelineError, run_cli
from scripts.core.inference import compile_ir, run_async

MODES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
# How to get a device this OpenVINO does not see, by device family.
_LEGACY = ("has no plugin after OpenVINO 2022.3 LTS: install openvino 2022.3 and run with a pipeline "
           "config whose benchmark.devices lists it")
DEVICE_HELP = {
    "MYRIAD": f"MYRIAD (Intel NCS2) {_LEGACY}",
    "HDDL": f"HDDL {_LEGACY}",
    "NPU": "NPU needs an Intel NPU (Core Ultra) and its driver (intel-npu-driver)",
    "GPU": "GPU needs an Intel GPU and its compute runtime (intel-opencl-icd or Level Zero)",
}
CSV_COLUMNS = ("device", "precision", "mode", "skipped", "latency_median_ms", "latency_p90_ms",
               "latency_min_ms", "latency_max_ms", "latency_mean_ms", "throughput_fps", "iterations",
               "requests", "streams", "inference_precision", "full_device_name", "openvino_version", "note")


def device_available(device, available):
    """CPU, GPU.1 or AUTO: exactly listed, or the family of a listed GPU.0, GPU.1, ..."""
    return device == "AUTO" or device in available or any(name.split(".")[0] == device for name in available)


def absent_device_reason(device, available):
    """Which devices exist, and how to get the one asked for."""
    import openvino as ov
    advice = DEVICE_HELP.get(device.split(".")[0], "check the name against openvino.Core().available_devices")
    return (f"config key benchmark.devices: device {device} is not available to OpenVINO "
            f"{ov.__version__.split('-')[0]} on this machine, which has: {', '.join(available) or 'none'}; "
            f"{advice}")


def latency_summary(latencies_ms):
    values = np.asarray(latencies_ms, np.float64)
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}


def for_seconds(seconds):
    """Yield until ``seconds`` have passed (at least once)."""
    started = time.perf_counter()
    yield
    while time.perf_counter() - started < seconds:
        yield


def measure_latency(compiled, pixels, seconds):
    """One synchronous request, one image at a time: (latencies in ms, wall seconds, requests)."""
    import openvino as ov
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(pixels))
    request.infer()  # warm-up: the first inference allocates
    latencies, started = [], time.perf_counter()
    for _ in for_seconds(seconds):
        request.infer()
        latencies.append(request.latency)
    return latencies, time.perf_counter() - started, 1


def measure_throughput(compiled, pixels, seconds):
    """The optimal number of asynchronous requests, kept busy: (latencies in ms, wall seconds, requests)."""
    import openvino as ov
    requests = ov.AsyncInferQueue(compiled)
    for request in requests:
        request.set_input_tensor(ov.Tensor(pixels))
    run_async(requests, ((None, None) for _ in range(len(requests))), lambda request, job: None)  # warm-up
    latencies, started = [], time.perf_counter()
    run_async(requests, ((None, None) for _ in for_seconds(seconds)),
              lambda request, job: latencies.append(request.latency))
    return latencies, time.perf_counter() - started, len(requests)


MEASURE = {"latency": measure_latency, "throughput": measure_throughput}


def random_input(compiled, seed=0):
    """A fixed random image batch of the compiled model's input shape."""
    shape = list(compiled.input(0).get_shape())
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def measure(core, ir_xml, device, mode, seconds, threads=None):
    """Latency statistics and throughput of one device and mode."""
    compiled = compile_ir(core, ir_xml, device, MODES[mode], threads)
    latencies, elapsed, requests = MEASURE[mode](compiled, random_input(compiled), seconds)
    return {
        "performance_hint": MODES[mode],
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        "latency_ms": latency_summary(latencies),
        "throughput_fps": len(latencies) / elapsed,
        "iterations": len(latencies),
        "requests": requests,
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "elapsed_seconds": elapsed,
        "cpu": cpu.description(compiled) if device.split(".")[0] == "CPU" else None,
    }


def benchmark(ir_xml, ir_json, device, modes, seconds, output, skip_absent, threads):
    """Write the benchmark JSON of one IR on one device (or a skipped one)."""
    import openvino as ov
    core = ov.Core()
    description = atomic.read_json(ir_json)
    result = {
        "schema_version": 1, "device": device, "precision": description["precision"],
        "openvino_version": ov.get_version(), "seconds": seconds, "threads": threads,
        "skipped": False, "reason": "", "full_device_name": None, "modes": {}, "cpu": None,
        "untrained_backbone": description["untrained_backbone"], "note": description["note"],
    }
    available = core.available_devices
    if not device_available(device, available):
        reason = absent_device_reason(device, available)
        if not skip_absent:
            raise PipelineError(f"{reason} (or set benchmark.skip_absent_devices: true to skip it)")
        result.update(skipped=True, reason=reason)
    else:
        result["full_device_name"] = core.get_property(device, "FULL_DEVICE_NAME")
        result["modes"] = {mode: measure(core, ir_xml, device, mode, seconds, threads) for mode in modes}
        result["cpu"] = next((measured["cpu"] for measured in result["modes"].values() if measured["cpu"]), None)
    atomic.write_json(output, result)
    return result


def csv_rows(result):
    """One row per mode of one benchmark JSON; a skipped device has one row, unmeasured (None)."""
    rows = []
    for mode in result["modes"] or [None]:
        measured = result["modes"].get(mode, {})
        row = dict.fromkeys(CSV_COLUMNS)
        row.update(device=result["device"], precision=result["precision"], mode=mode, skipped=result["skipped"],
                   full_device_name=result["full_device_name"], openvino_version=result["openvino_version"],
                   note=result["note"])
        if measured:
            row.update({f"latency_{key}_ms": round(value, 3) for key, value in measured["latency_ms"].items()})
            row.update({key: measured[key] for key in ("iterations", "requests", "streams", "inference_precision")})
            row["throughput_fps"] = round(measured["throughput_fps"], 2)
        rows.append(row)
    return rows


def gather(result_paths, output_csv, output_json):
    """benchmarks.csv and benchmarks.json of one experiment, in the given order."""
    results = [atomic.read_json(path) for path in result_paths]
    rows = [row for result in results for row in csv_rows(result)]
    atomic.write_table(output_csv, CSV_COLUMNS, [list(row.values()) for row in rows])
    atomic.write_json(output_json, {
        "schema_version": 1, "rows": rows,
        "cpu": next((result["cpu"] for result in results if result.get("cpu")), None),  # scripts/core/cpu.py
        "untrained_backbone": any(result["untrained_backbone"] for result in results),
        "note": next((result["note"] for result in results if result["note"]), ""),
    })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="benchmark one IR on one device")
    run.add_argument("--ir-xml", required=True, help="model.xml")
    run.add_argument("--ir-json", required=True, help="ir.json of the IR")
    run.add_argument("--device", required=True, help="OpenVINO device name: CPU, GPU, NPU, ...")
    run.add_argument("--modes", nargs="+", choices=list(MODES), required=True)
    run.add_argument("--seconds", type=float, required=True, help="measuring time per mode")
    run.add_argument("--skip-absent", action="store_true", help="write a skipped result for an absent device")
    run.add_argument("--threads", type=int, required=True, help="CPU inference threads (0: the plugin's choice)")
    run.add_argument("--output", required=True)
    collect = commands.add_parser("gather", help="benchmarks.csv and benchmarks.json of an experiment")
    collect.add_argument("--output-csv", required=True)
    collect.add_argument("--output-json", required=True)
    collect.add_argument("results", nargs="+", help="benchmark JSON files")
    args = parser.parse_args(argv)
    if args.command == "gather":
        rows = gather(args.results, args.output_csv, args.output_json)
        print(f"wrote {len(rows)} rows to {args.output_csv}")
        return
    result = benchmark(args.ir_xml, args.ir_json, args.device, args.modes, args.seconds, args.output,
                       args.skip_absent, args.threads or None)
    if result["skipped"]:
        print(f"skipped: {result['reason']}")
    for mode, measured in result["modes"].items():
        print(f"{result['device']} {result['precision']} {mode}: median {measured['latency_ms']['median']:.2f} ms, "
              f"{measured['throughput_fps']:.1f} images/s{note_suffix(result['note'])}")


if __name__ == "__main__":
    run_cli(main)
