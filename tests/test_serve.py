"""The model server (python -m scripts.serve, KServe's ModelServer) on 127.0.0.1, with real clients.

tritonclient[http] (NVIDIA's client of the same Open Inference Protocol, written by none of us)
must get the probabilities ``predict`` computes for the same images and IR; every bad request
gets a 4xx with one line, and the server is still alive after all of them; SIGTERM stops it
cleanly. The IRs are small ones made by the project's own IR code (tests/tiny_ir.py), so the
whole file takes seconds after the server's start.

The server needs kserve, which pins protobuf below the project's 7.x: it runs in the serving
environment (requirements-serve.txt), named by SERVE_PYTHON, or this interpreter if it has kserve.
"""
import glob
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tiny_ir
from conftest import REPO, SHARED_DATA

from scripts import predict
from scripts.core.images import preprocess_image
from scripts.serve import operating_point, pixels

MAX_BODY = 2_000_000
POINT = {"operating_point": {"threshold": 0.3, "positive_classes": ["square", "triangle"]},
         "low_confidence": {"threshold": 0.99}}


def serve_python():
    """The interpreter of the serving environment."""
    if os.environ.get("SERVE_PYTHON"):
        return os.environ["SERVE_PYTHON"]
    beside = os.path.join(REPO, ".venv-serve", "bin", "python")  # as the README's test command makes it
    if os.path.exists(beside):
        return beside
    if importlib.util.find_spec("kserve"):
        return sys.executable
    pytest.fail("the server needs kserve: make the serving environment (python -m venv V && "
                "V/bin/pip install -r requirements-serve.txt) and set SERVE_PYTHON=V/bin/python")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def real_images():
    images = sorted(glob.glob(os.path.join(SHARED_DATA, "all-taleqani", "*", "*.jpg")))[:3]
    images += sorted(glob.glob(os.path.join(SHARED_DATA, "ants-bees", "*", "*.jpg")))[:3]
    assert len(images) == 6, "the shared real images are missing"
    return images


def http(url, data=None, headers=None, method=None):
    """(status, parsed JSON body) of one request; 4xx and 5xx are returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Three models on one server: the IR, the IR with an operating point, the IR with pixels built in."""
    root = tmp_path_factory.mktemp("serve")
    xml = tiny_ir.build(str(root / "plain"), size=64, central_fraction=0.875)
    point_xml = tiny_ir.build(str(root / "point"), size=64, central_fraction=0.875, extra=POINT)
    pixel_xml = str(root / "pixels" / "model.xml")
    description = predict.load_model(xml)[1]
    pixels.save_pixel_ir(xml, pixel_xml, description["preprocessing"])
    for name in ("ir.json", "labels.json"):
        with open(os.path.join(root, "plain", name), "rb") as source, open(root / "pixels" / name, "wb") as copy:
            copy.write(source.read())
    port = free_port()
    log = open(root / "server.log", "w+")
    process = subprocess.Popen(
        [serve_python(), "-m", "scripts.serve", "--port", str(port), "--max-body-bytes", str(MAX_BODY),
         "--model", f"tiny={xml}", "--model", f"tiny_point={point_xml}", "--model", f"tiny_pixels={pixel_xml}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=REPO))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if http(f"{url}/v2/health/ready")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            pytest.fail(f"the server did not start:\n{log.read()[-3000:]}")
        time.sleep(0.3)
    yield {"url": url, "host": f"127.0.0.1:{port}", "xml": xml, "point_xml": point_xml, "process": process,
           "log": log, "description": description}
    if process.poll() is None:
        process.kill()


def predicted(xml, paths):
    """``predict``'s probabilities [N, classes] for the images, in label order."""
    model, description = predict.load_model(xml)
    labels = description["labels"]
    rows = []
    for result in predict.predict(model, description, paths, k=len(labels)):
        assert result["error"] is None
        found = dict(result["top"])
        rows.append([found[label] for label in labels])
    return np.array(rows)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_the_probabilities_predict_computes(served, binary):
    import tritonclient.http as triton
    paths = real_images()
    contract = served["description"]["preprocessing"]
    batch = np.stack([preprocess_image(path, contract) for path in paths])
    client = triton.InferenceServerClient(served["host"])
    assert client.is_server_live() and client.is_model_ready("tiny")
    metadata = client.get_model_metadata("tiny")
    assert metadata["inputs"][0]["shape"] == [-1, 64, 64, 3] and metadata["outputs"][0]["name"] == "final_result"
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    result = client.infer("tiny", [tensor], outputs=[triton.InferRequestedOutput("final_result", binary_data=binary)])
    served_probabilities = result.as_numpy("final_result")
    expected = predicted(served["xml"], paths)
    assert served_probabilities.shape == expected.shape == (len(paths), len(tiny_ir.LABELS))
    assert np.abs(served_probabilities - expected).max() < 1e-5
    assert expected.std(axis=0).max() > 1e-3  # the images are told apart: a wrong input would show


def test_the_classify_route_answers_as_predict_with_the_decision_and_low_confidence(served):
    paths = real_images()
    expected = predicted(served["xml"], paths)
    for path, row in zip(paths, expected):
        with open(path, "rb") as handle:
            status, plain = http(f"{served['url']}/models/tiny/classify", handle.read(),
                                 {"content-type": "image/jpeg"})
        assert status == 200
        got = np.array([plain["probabilities"][label] for label in tiny_ir.LABELS])
        assert np.abs(got - row).max() < 1e-5
        assert plain["label"] == plain["decision"] == tiny_ir.LABELS[int(row.argmax())]
        assert plain["low_confidence"] is None and plain["decision_threshold"] is None
        status, pointed = http(f"{served['url']}/models/tiny_point/classify", open(path, "rb").read())
        positive = row[1] + row[2]
        assert status == 200 and abs(pointed["positive_probability"] - positive) < 1e-5
        assert pointed["decision"] == ("positive" if positive >= 0.3 else "negative")
        assert pointed["low_confidence"] == bool(row.max() < 0.99)


def test_a_multipart_upload_is_classified_like_the_raw_body(served):
    path = real_images()[0]
    boundary = "x1x2x3"
    data = open(path, "rb").read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, form = http(f"{served['url']}/models/tiny/classify", body,
                        {"content-type": f"multipart/form-data; boundary={boundary}"})
    raw = http(f"{served['url']}/models/tiny/classify", data)[1]
    assert status == 200 and form["probabilities"] == raw["probabilities"]


def test_the_pixel_model_takes_uint8_rgb_of_any_size_close_to_predict(served):
    import tritonclient.http as triton

    from scripts.core.images import decode_rgb
    client = triton.InferenceServerClient(served["host"])
    paths = real_images()
    expected = predicted(served["xml"], paths)
    for path, row in zip(paths, expected):
        rgb = np.asarray(decode_rgb(path))[None]
        tensor = triton.InferInput("pixels", list(rgb.shape), "UINT8")
        tensor.set_data_from_numpy(rgb)
        got = client.infer("tiny_pixels", [tensor]).as_numpy("final_result")[0]
        # The same preprocessing in OpenVINO ops: not bit-exact (see scripts/serve/pixels.py).
        assert np.abs(got - row).max() < 0.05
        assert got.argmax() == row.argmax()


def png_bomb():
    """A tiny PNG that decodes to 100 million pixels."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")
    return buffer.getvalue()


def bad_requests(served):
    """(what, url, body, headers, expected status) of every kind of bad request."""
    url = served["url"]
    jpeg = open(real_images()[0], "rb").read()
    infer = f"{url}/v2/models/tiny/infer"
    as_json = {"content-type": "application/json"}

    def tensor(shape, datatype, data):
        return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}).encode()

    return [
        ("not an image", f"{url}/models/tiny/classify", b"plain text, not pixels" * 20, {}, 400),
        ("a truncated JPEG", f"{url}/models/tiny/classify", jpeg[:len(jpeg) // 3], {}, 400),
        ("a decompression bomb", f"{url}/models/tiny/classify", png_bomb(), {}, 413),
        ("a body over the size limit", f"{url}/models/tiny/classify", b"\xff" * (MAX_BODY + 1), {}, 413),
        ("a body over the size limit", infer, b"{" + b" " * (MAX_BODY + 1), as_json, 413),
        ("a wrong tensor shape", infer, tensor([1, 32, 32, 3], "FP32", [0.0] * 3072), as_json, 400),
        ("a wrong tensor dtype", infer, tensor([1, 64, 64, 3], "INT32", [0] * 12288), as_json, 400),
        ("data that does not fill the shape", infer, tensor([1, 64, 64, 3], "FP32", [0.5] * 10), as_json, 400),
        ("malformed JSON", infer, b'{"inputs": [', as_json, 400),
        ("JSON that is no inference request", infer, b'{"inputs": "x"}', as_json, 400),
        ("an unknown model name", f"{url}/v2/models/nope/infer", tensor([1, 64, 64, 3], "FP32", [0.0]), as_json, 404),
        ("an unknown model name", f"{url}/models/nope/classify", jpeg, {}, 404),
        ("an empty upload", f"{url}/models/tiny/classify", b"", {}, 400),
    ]


def test_every_bad_request_gets_a_4xx_with_one_line_and_the_server_stays_up(served):
    for what, url, body, headers, status in bad_requests(served):
        got, answer = http(url, body, headers, "POST")
        assert got == status, f"{what}: {got} {answer}"
        assert isinstance(answer["error"], str) and "\n" not in answer["error"] and answer["error"], what
        assert http(f"{served['url']}/v2/health/live") == (200, {"live": True}), f"down after {what}"
    assert served["process"].poll() is None


def test_operating_point_is_read_from_the_description_or_reported_as_none():
    assert operating_point.read({}) == dict.fromkeys(operating_point.KEYS)
    point = operating_point.read(POINT)
    assert point["decision_threshold"] == 0.3 and point["positive_classes"] == ["square", "triangle"]
    rt_info = {"calibration": json.dumps({"temperature": 1.5}), "low_confidence": json.dumps({"threshold": 0.6})}
    assert operating_point.read({}, rt_info)["temperature"] == 1.5
    assert operating_point.read({}, rt_info)["low_confidence_threshold"] == 0.6


def test_operating_point_is_read_from_the_ir_rt_info(tmp_path):
    import openvino as ov
    xml = tiny_ir.build(str(tmp_path), size=32)
    model = ov.Core().read_model(xml)
    # As scripts/deploy/ir.py writes it.
    model.set_rt_info(json.dumps({"threshold": 0.4, "positive_classes": ["square"]}), ["deployment", "operating_point"])
    section = operating_point.rt_info_section(model)
    assert json.loads(section["labels"]) == tiny_ir.LABELS
    point = operating_point.read({}, section)
    assert point["decision_threshold"] == 0.4 and point["positive_classes"] == ["square"]


def test_sigterm_stops_the_server_cleanly_with_one_log_line_per_request(served):
    """Last in the file: it stops the module's server."""
    process, log = served["process"], served["log"]
    requests_before = http(f"{served['url']}/v2/health/live")
    assert requests_before[0] == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log.seek(0)
    lines = log.read().splitlines()
    assert any(line.endswith("serve: stopped") for line in lines)
    request_lines = [line for line in lines if " serve: " in line and (" GET " in line or " POST " in line)]
    assert any(" POST /v2/models/tiny/infer 200 " in line for line in request_lines)
    assert any(" POST /models/tiny/classify 413 " in line for line in request_lines)
    assert not any("Traceback" in line for line in lines)
    live_lines = [line for line in request_lines if "GET /v2/health/live 200" in line]
    assert len(live_lines) >= len(bad_requests(served)) + 1
