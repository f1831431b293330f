"""Served throughput against the benchmark stage's, for the same IR on the same machine (loopback only).

    SERVE_PYTHON=.venv-serve/bin/python python bench/bench_serve.py --ir-xml results/default/ir/INT8/model.xml
    SERVE_PYTHON=.venv-serve/bin/python python bench/bench_serve.py \
        --inception-mixed8 ../shared/data/weights/inception_v3_mixed8_frozen.pb
    SERVE_PYTHON=.venv-serve/bin/python python bench/bench_serve.py \
        --mobilenet ../shared/data/weights/mobilenet_v1_0.25_224_frozen.tgz --batch 1 8 32

First the benchmark stage's own throughput mode (scripts/deploy/benchmark.py: the device's
optimal number of asynchronous requests, no HTTP) for ``--seconds``, before and after the
served run (the ratio uses their mean: a shared machine's load changes); then the server
(python -m scripts.serve) on 127.0.0.1 with the same IR, and at each concurrency a fixed
number of images in Open Inference Protocol requests from tritonclient (``--batch`` images
each, binary tensors), each client thread with its own connection. Printed per (batch,
concurrency): images/s, p50/p99 latency per request and errors; per batch size, the best
served images/s over the stage's. Then every kind of bad request once, and whether the
server is still alive.

``--inception-mixed8 PB`` makes the IR from the real ImageNet Inception V3 cut at mixed_8
(its global average, 1280 features) with a random head joined by scripts/deploy/ir.py: a model
of the pipeline's real cost, for a run that has no pipeline results. ``--mobilenet TGZ`` makes
the INT8 MobileNet V1 IR as the pipeline does (scripts/model/backbone.py cuts the frozen graph at
its bottleneck, NNCF quantizes it on real images, scripts/deploy/ir.py joins a random head;
one view, no test-time augmentation).
"""
import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.core import atomic, backbones, formats  # noqa: E402
from scripts.core.inference import compile_ir  # noqa: E402
from scripts.core.model_contract import model_contract  # noqa: E402
from scripts.deploy import benchmark, ir  # noqa: E402

DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
MOBILENET = backbones.PRESETS["mobilenet_v1_025_224"]  # graph member, tensors, size, range: the pipeline's
CALIBRATION_IMAGES = 100


def real_images():
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(DATA, "all-taleqani"))
                  for name in names if name.endswith(".jpg"))


def random_head(width, classes, seed=0):
    rng = np.random.default_rng(seed)
    return {"mean": np.zeros(width, np.float32), "scale": np.ones(width, np.float32),
            "logits_w": rng.normal(0, 0.05, (width, classes)).astype(np.float32),
            "logits_b": np.zeros(classes, np.float32)}


def deployed_ir(backbone_xml, width, size, folder, precision, classes=4):
    """model.xml + ir.json: the backbone IR joined to a random softmax head (one view)."""
    info = {"input_size": size, "input_range": [-1.0, 1.0], "untrained": True, "note": "random head"}
    labels = [f"class{index}" for index in range(classes)]
    contract = model_contract(info, labels, 1.0, "bilinear", [0], 0)
    model = ir.join(backbone_xml, random_head(width, classes), size, [0])
    ir.set_rt_info(model, contract)
    xml = os.path.join(folder, "model.xml")
    formats.write_ir(model, xml)
    atomic.write_json(os.path.join(folder, "ir.json"), ir.ir_description(model, contract, precision, {}))
    return xml


def mobilenet_int8_ir(tgz, folder):
    """The pipeline's INT8 MobileNet V1 0.25 backbone (cut, NNCF on real images) with a random head."""
    import openvino as ov

    from scripts.core.images import preprocess_image, preprocessing_contract
    from scripts.model import backbone, backbone_ir
    with tarfile.open(tgz) as archive:
        archive.extract(MOBILENET["graph_member"], os.path.join(folder, "tgz"), filter="data")
    pb, size = os.path.join(folder, "backbone.pb"), MOBILENET["input_size"]
    width = backbone.prepare("frozen_graph", os.path.join(folder, "tgz"), pb, os.path.join(folder, "backbone.json"),
                             size, MOBILENET["input_range"], False, MOBILENET["graph_member"],
                             MOBILENET["input_tensor"], MOBILENET["bottleneck_tensor"], [])
    contract = preprocessing_contract(size, MOBILENET["input_range"], 1.0, "bilinear")
    images = real_images()
    chosen = images[::max(1, len(images) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]  # every class
    calibration = [preprocess_image(path, contract)[None] for path in chosen]
    model = backbone_ir.quantize(ov.convert_model(pb, input=[-1, size, size, 3]), calibration)
    formats.write_ir(model, os.path.join(folder, "backbone.xml"))
    return deployed_ir(os.path.join(folder, "backbone.xml"), width, size, folder, "INT8")


def inception_mixed8_ir(pb, folder):
    """model.xml + ir.json of Inception V3 up to mixed_8's average, with a random softmax head."""
    import openvino as ov
    backbone = ov.convert_model(pb)
    for result in list(backbone.get_results()):
        if result.output(0).get_any_name() != "incv3/mixed_8_gap:0":
            backbone.remove_result(result)
    backbone.reshape([1, 299, 299, 3])
    formats.write_ir(backbone, os.path.join(folder, "backbone.xml"))
    return deployed_ir(os.path.join(folder, "backbone.xml"), 1280, 299, folder, "FP32")


def stage_throughput(xml, seconds):
    """(images/s, requests, CPU ms per image) of the benchmark stage's throughput mode, as
    benchmark.measure runs it; the CPU time is this process's while it measures (not compiling)."""
    import openvino as ov
    compiled = compile_ir(ov.Core(), xml, "CPU", benchmark.MODES["throughput"])
    cpu_before = sum(os.times()[:2])
    latencies, elapsed, requests = benchmark.measure_throughput(compiled, benchmark.random_input(compiled), seconds)
    return len(latencies) / elapsed, requests, (sum(os.times()[:2]) - cpu_before) * 1000 / len(latencies)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(xml, port, log):
    python = os.environ.get("SERVE_PYTHON", sys.executable)
    process = subprocess.Popen([python, "-m", "scripts.serve", "--model", f"bench={xml}", "--port", str(port)],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONPATH=REPO))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start; see its log")


def load(port, batch, requests, concurrency):
    """(images/s, p50 ms, p99 ms per request, errors) of ``requests`` infer calls of ``batch`` [N, S, S, 3]
    from ``concurrency`` threads."""
    import tritonclient.http as triton
    clients = [triton.InferenceServerClient(f"127.0.0.1:{port}") for _ in range(concurrency)]
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    wanted = [triton.InferRequestedOutput("final_result", binary_data=True)]

    def worker(index):
        latencies, errors = [], 0
        for _ in range(index, requests, concurrency):
            started = time.perf_counter()
            try:
                if clients[index].infer("bench", [tensor], outputs=wanted).as_numpy("final_result").shape[0] != len(batch):
                    errors += 1
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - started)
        return latencies, errors

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies = np.array([value for part, _ in results for value in part]) * 1000
    return (requests * len(batch) / elapsed, np.percentile(latencies, 50), np.percentile(latencies, 99),
            sum(e for _, e in results))


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (its threads included)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_table(port, server_pid, images, batches, concurrencies, count):
    """{batch: best images/s over the concurrencies}, printing a row per (batch, concurrency) with the
    CPU time per image of the server (model included) and of this process (the client)."""
    best = {}
    print("batch  concurrency  requests  images/s  p50 ms/request  p99 ms/request  errors  "
          "server CPU ms/image  client CPU ms/image")
    for size in batches:
        batch = images[np.arange(size) % len(images)]
        for concurrency in concurrencies:
            requests = max(concurrency, -(-count // size))  # about ``count`` images, every client busy
            server_before, client_before = cpu_seconds(server_pid), sum(os.times()[:2])
            fps, p50, p99, errors = load(port, batch, requests, concurrency)
            server_ms = (cpu_seconds(server_pid) - server_before) * 1000 / (requests * size)
            client_ms = (sum(os.times()[:2]) - client_before) * 1000 / (requests * size)
            best[size] = max(best.get(size, 0.0), fps)
            print(f"{size:5d}  {concurrency:11d}  {requests:8d}  {fps:8.1f}  {p50:14.1f}  {p99:14.1f}  {errors:6d}  "
                  f"{server_ms:19.2f}  {client_ms:19.2f}")
    return best


def bad_requests(port, image_path):
    """Each kind of bad request once: [(what, status)]."""
    url = f"http://127.0.0.1:{port}"
    jpeg = open(image_path, "rb").read()
    as_json = {"content-type": "application/json"}
    wrong = json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8, 3], "datatype": "FP32",
                                    "data": [0.0] * 192}]}).encode()
    cases = [("not an image", "/models/bench/classify", b"text" * 100, {}),
             ("truncated JPEG", "/models/bench/classify", jpeg[:len(jpeg) // 3], {}),
             ("body over the limit", "/models/bench/classify", b"\0" * 20_000_001, {}),
             ("wrong shape", "/v2/models/bench/infer", wrong, as_json),
             ("wrong dtype", "/v2/models/bench/infer", wrong.replace(b"FP32", b"INT64"), as_json),
             ("malformed JSON", "/v2/models/bench/infer", b"{", as_json),
             ("unknown model", "/v2/models/nope/infer", wrong, as_json)]
    answers = []
    for what, path, body, headers in cases:
        try:
            with urllib.request.urlopen(urllib.request.Request(url + path, body, headers), timeout=30) as response:
                answers.append((what, response.status))
        except urllib.error.HTTPError as error:
            answers.append((what, error.code))
    return answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ir-xml", help="a deployed IR (ir.json beside it)")
    source.add_argument("--inception-mixed8", help="inception_v3_mixed8_frozen.pb: make a real-cost IR from it")
    source.add_argument("--mobilenet", help="mobilenet_v1_0.25_224_frozen.tgz: make the INT8 IR from it")
    parser.add_argument("--images", type=int, default=400,
                        help="images per (batch, concurrency): ceil(images / batch) requests (default 400)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="images per request (default 1)")
    parser.add_argument("--seconds", type=float, default=10, help="the benchmark stage's measuring time")
    args = parser.parse_args()
    from scripts.core.images import preprocess_image
    print(f"load average at the start: {load_average()}")
    with tempfile.TemporaryDirectory() as temp:
        if args.mobilenet:
            xml = mobilenet_int8_ir(args.mobilenet, temp)
        else:
            xml = args.ir_xml or inception_mixed8_ir(args.inception_mixed8, temp)
        contract = atomic.read_json(os.path.join(os.path.dirname(xml), "ir.json"))["preprocessing"]
        paths = real_images()
        images = np.stack([preprocess_image(path, contract) for path in paths[:max(args.batch)]])
        stage, requests_in_flight, stage_cpu = stage_throughput(xml, args.seconds)
        print(f"benchmark stage (throughput mode, {requests_in_flight} requests): {stage:.1f} images/s, "
              f"{stage_cpu:.2f} CPU ms/image")
        port = free_port()
        with open(os.path.join(temp, "server.log"), "w") as log:
            server = start_server(xml, port, log)
            try:
                best = served_table(port, server.pid, images, args.batch, args.concurrency, args.images)
                after, _, after_cpu = stage_throughput(xml, args.seconds)  # the machine's load may have changed
                print(f"benchmark stage after the served run: {after:.1f} images/s, {after_cpu:.2f} CPU ms/image")
                stage = (stage + after) / 2
                for size, fps in best.items():
                    print(f"batch {size}: served / benchmark stage (best concurrency; stage: mean of before and "
                          f"after) = {fps:.1f} / {stage:.1f} = {fps / stage:.2f}")
                answers = bad_requests(port, paths[0])
                for what, status in answers:
                    print(f"bad request, {what}: {status}")
                alive = urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=5).status == 200
                print(f"every bad request a 4xx: {all(400 <= status < 500 for _, status in answers)}; "
                      f"server alive after them: {alive}")
            finally:
                server.terminate()
                server.wait(timeout=30)
        import platform
        print(f"CPU: {cpu_name()}; {platform.python_version()}; load average at the end: {load_average()}")


def load_average():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_name():
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        text = handle.read()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return f"{name} ({', '.join(flag for flag in ('avx2', 'avx512_vnni') if f' {flag}' in flags)})"


if __name__ == "__main__":
    main()
