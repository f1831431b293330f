"""The deployed IR behind KServe's ModelServer: the Open Inference Protocol (v2) and a plain image route.

Endpoints (KServe's own, over HTTP; gRPC is off):
    GET  /v2/health/live, /v2/health/ready, /v2/models/<name>/ready   health
    GET  /v2/models/<name>                                           model metadata
    POST /v2/models/<name>/infer                                     tensors in, probabilities out
    POST /models/<name>/classify                                     an image file in (multipart field
         `image`, or the raw body): labels, calibrated probabilities, the decision and low_confidence
A model takes the deployed IR's input (float32 [N, S, S, 3], scripts/core/images.py's
preprocessing done by the client) or, for an IR with the preprocessing built in
(scripts/serve/pixels.py), UINT8 [1, H, W, 3] RGB pixels. The classify route decodes and
preprocesses the upload with the project's one definition (scripts/core/images.py), as
``predict`` does.

Every request is logged as one line; a bad request gets a 4xx and one line; bodies over
``max_body_bytes`` are refused before they are read in full; SIGTERM stops the server after
the requests in flight.
"""
import asyncio
import io
import logging
import os
import time
import uuid

import numpy as np

from scripts.core import atomic
from scripts.core.contract import note_suffix
from scripts.core.errors import PipelineError
from scripts.core.images import preprocess_image
from scripts.serve import operating_point
from scripts.serve.engine import AsyncIr

LOG = logging.getLogger("scripts.serve")
DATATYPES = {"FP32": np.float32, "UINT8": np.uint8}
MAX_BATCH = 64


class BadRequest(ValueError):
    """A request the server refuses with a 4xx and this one line."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ the model
def read_model_files(ir_xml):
    """(description, labels) from ir.json beside the IR (labels.json where it is not there)."""
    folder = os.path.dirname(os.path.abspath(ir_xml))
    path = os.path.join(folder, "ir.json")
    if not os.path.isfile(path):
        raise PipelineError(f"{path}: missing (the IR's description, written beside it)")
    description = atomic.read_json(path)
    return description, description["labels"]


def import_kserve():
    try:
        import kserve
    except ImportError:
        raise PipelineError("the server needs the kserve package: pip install -r requirements-serve.txt "
                            "(in its own environment, envs/serve.yaml)") from None
    return kserve


def served_model_class():
    """The kserve.Model subclass (defined on first use: kserve is imported only by the server)."""
    kserve = import_kserve()
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferResponse

    class ServedIr(kserve.Model):
        """One IR as a KServe model: validates the tensor, runs it on the AsyncInferQueue."""

        def __init__(self, name, ir_xml, device="CPU", threads=None):
            super().__init__(name)
            self.ir_xml, self.device, self.threads = ir_xml, device, threads
            self.description, self.labels = read_model_files(ir_xml)
            self.engine = None

        def load(self):
            self.engine = AsyncIr(self.ir_xml, self.device, self.threads)
            shape = self.engine.model.input(0).get_partial_shape()
            self.input_shape = [-1 if dimension.is_dynamic else dimension.get_length() for dimension in shape]
            self.input_type = "UINT8" if self.engine.input.get_element_type().get_type_name() == "u8" else "FP32"
            self.pixel_input = self.input_type == "UINT8"
            self.point = operating_point.read(self.description,
                                              operating_point.rt_info_section(self.engine.model))
            self.ready = True
            LOG.info("model %s: %s on %s, %d requests in flight (the device's optimal number), input %s %s%s",
                     self.name, self.ir_xml, self.device, self.engine.requests, self.input_type, self.input_shape,
                     note_suffix(self.description.get("note")))
            return self.ready

        def stop(self):
            if self.engine is not None:
                self.engine.close()

        def get_input_types(self):
            return [{"name": self.engine.input.get_any_name(), "datatype": self.input_type,
                     "shape": [-1, *self.input_shape[1:]] if not self.pixel_input else self.input_shape}]

        def get_output_types(self):
            return [{"name": "final_result", "datatype": "FP32", "shape": [-1, len(self.labels)]}]

        def check_tensor(self, name, datatype, shape):
            """One line naming what is wrong with an input tensor, else None."""
            expected = self.get_input_types()[0]
            if datatype != expected["datatype"]:
                return f"input {name}: datatype {datatype}; this model takes {expected['datatype']}"
            if len(shape) != 4 or any(want not in (-1, got) for want, got in zip(expected["shape"][1:], shape[1:])):
                return f"input {name}: shape {list(shape)}; this model takes {expected['shape']} (-1: any)"
            if not 1 <= shape[0] <= (1 if self.pixel_input else MAX_BATCH):
                return f"input {name}: batch of {shape[0]}; this model takes 1 to {1 if self.pixel_input else MAX_BATCH}"
            if self.pixel_input and (shape[1] < 1 or shape[2] < 1 or shape[1] * shape[2] > MAX_PIXELS):
                return f"input {name}: {shape[2]} x {shape[1]} pixels; at most {MAX_PIXELS} pixels"
            return None

        async def run(self, array):
            return await self.engine.infer_batch(array)

        async def predict(self, payload, headers=None):
            if len(payload.inputs) != 1:
                raise InvalidInput(f"{len(payload.inputs)} inputs; this model takes one")
            tensor = payload.inputs[0]
            problem = self.check_tensor(tensor.name, tensor.datatype, list(tensor.shape))
            if problem:
                raise InvalidInput(problem)
            try:
                array = tensor.as_numpy()
            except Exception as error:  # kserve's own check of data against the shape
                raise InvalidInput(f"input {tensor.name}: {str(error).splitlines()[0]}") from None
            array = np.asarray(array, dtype=DATATYPES[self.input_type]).reshape(tensor.shape)
            probabilities = await self.run(array)
            output = InferOutput("final_result", list(probabilities.shape), "FP32")
            output.set_data_from_numpy(probabilities.astype(np.float32), binary_data=payload.use_binary_outputs)
            return InferResponse(payload.id or str(uuid.uuid4()), self.name, [output], use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)

        async def classify(self, data):
            """The plain route's answer for one uploaded image."""
            if self.pixel_input:
                raise BadRequest(f"model {self.name} takes pixels; classify with the float model")
            loop = asyncio.get_running_loop()
            pixels = await loop.run_in_executor(None, decode_upload, data, self.description["preprocessing"])
            probabilities = (await self.run(pixels[None]))[0]
            result = operating_point.decide(probabilities, self.labels, self.point)
            return {"model": self.name, "labels": self.labels, **result,
                    "note": self.description.get("note", "")}

    return ServedIr


# ------------------------------------------------------------------ uploads
MAX_PIXELS = 40_000_000  # a decoded image larger than this is refused before it is decoded


def decode_upload(data, contract):
    """float32 [S, S, 3] from uploaded bytes, or BadRequest with one line."""
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise BadRequest("empty body: send an image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise BadRequest("not an image (JPEG, PNG, GIF, BMP, TIFF or WebP)") from None
    if width * height > MAX_PIXELS:
        raise BadRequest(f"image of {width} x {height} pixels: over the limit of {MAX_PIXELS} pixels", 413)
    try:
        return preprocess_image(data, contract)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise BadRequest(f"cannot read the image ({str(error).splitlines()[0]})") from None


# ------------------------------------------------------------------ the HTTP side
DRAIN_BYTES = 200_000_000


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 (by its Content-Length, or as it streams)."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self.drain(receive, int(length))
            return await self.refuse(send)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(send)

    async def drain(self, receive, length):
        """Read and drop a refused body (up to DRAIN_BYTES) before answering, so that a client that
        sends its whole body before it reads gets the 413 rather than a connection reset."""
        dropped = 0
        while dropped < min(length, DRAIN_BYTES):
            message = await receive()
            dropped += len(message.get("body", b""))
            if not message.get("more_body") or message["type"] != "http.request":
                return

    async def refuse(self, send):
        body = f'{{"error": "request body over the limit of {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class JsonByDefault:
    """ASGI middleware: an infer body with neither a JSON content type nor the binary extension's
    header is JSON (the protocol does not ask clients for a content type; tritonclient sends none,
    and KServe would take such a body for binary tensors)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            headers = dict(scope.get("headers") or [])
            if b"inference-header-content-length" not in headers and b"json" not in headers.get(b"content-type", b""):
                headers[b"content-type"] = b"application/json"
                scope = dict(scope, headers=list(headers.items()))
        return await self.app(scope, receive, send)


class RequestLog:
    """ASGI middleware: one line per request (method, path, status, milliseconds, bytes in)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, size = time.perf_counter(), [500], [0]

        async def counted_receive():
            message = await receive()
            size[0] += len(message.get("body", b""))
            return message

        async def status_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, counted_receive, status_send)
        finally:
            LOG.info("%s %s %d %.1f ms %d B", scope["method"], scope["path"], status[0],
                     (time.perf_counter() - started) * 1000, size[0])


def one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def add_routes(app, registry):
    """The plain classify route and one-line JSON errors for what FastAPI refuses itself."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    async def classify(model_name: str, request: Request):
        model = registry.get_model(model_name)
        if model is None or not hasattr(model, "classify"):
            return JSONResponse({"error": f"model {model_name} is not served here"}, 404)
        data = await upload_bytes(request)
        try:
            return await model.classify(data)
        except BadRequest as error:
            return JSONResponse({"error": str(error)}, error.status)

    async def validation_error(request, error):
        problems = error.errors()
        first = problems[0] if problems else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse({"error": f"malformed request{' at ' + where if where else ''}: "
                                      f"{first.get('msg', 'invalid body')}"}, 400)

    app.add_api_route("/models/{model_name}/classify", classify, methods=["POST"])
    app.add_exception_handler(RequestValidationError, validation_error)


async def upload_bytes(request):
    """The image's bytes: a multipart form's first file (field `image` preferred), or the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        files = [value for key, value in form.multi_items() if hasattr(value, "read")]
        chosen = form.get("image") if hasattr(form.get("image"), "read") else (files[0] if files else None)
        return await chosen.read() if chosen is not None else b""
    return await request.body()


# ------------------------------------------------------------------ start and stop
def serve(models, host="127.0.0.1", port=8080, max_body_bytes=20_000_000):
    """Start KServe's ModelServer with ``models`` on host:port until SIGTERM or SIGINT."""
    import_kserve()
    import kserve
    from kserve import model_server
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    class LeanRESTServer(RESTServer):
        def _add_middlewares(self, app):
            """None: KServe's only one, TimingMiddleware, takes the CPU time of every request for
            trace lines that quiet_kserve_logs turns off (~3% of a busy server's time)."""

    class LoopbackModelServer(kserve.ModelServer):
        """ModelServer with its REST server on ``host`` (KServe binds 0.0.0.0), HTTP only, on uvloop."""

        def start(self, models):
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = LeanRESTServer(FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                                               self.http_port, grace_period=self.grace_period,
                                               timeout_keep_alive=self.timeout_keep_alive)
            self._rest_server.config.host = host
            self.register_signal_handler()
            # KServe's own start runs asyncio's loop whatever its event_loop option says (that
            # option reaches only its multi-process server); uvloop reads the sockets faster.
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(self.serve_on_this_loop())

        async def serve_on_this_loop(self):
            self.setup_event_loop()  # KServe's exception handler and executor, on the running loop
            await self._rest_server.start()

        def stop(self, sig):
            LOG.info("signal %d: stopping after the requests in flight", sig)
            self._rest_server._server.should_exit = True

    keep_binary_tensors_binary()
    keep_freed_buffers()
    server = LoopbackModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False,
                                 grace_period=10)
    quiet_kserve_logs()  # after KServe has configured its logging
    add_routes(model_server.app, server.registered_models)
    model_server.app.add_middleware(JsonByDefault)
    model_server.app.add_middleware(BodyLimit, limit=max_body_bytes)
    model_server.app.add_middleware(RequestLog)
    try:
        server.start(models)
    finally:
        for model in models:
            model.stop()
        LOG.info("stopped")


def keep_freed_buffers():
    """glibc hands a freed buffer over 128 KB back to the kernel, so every request body (600 KB an image
    at 224 x 224) and its copies were page-faulted in afresh: 100 to 200 faults and ~0.4 ms of system
    time per image. Buffers up to 32 MB (glibc's largest threshold) now come from the heap, which keeps them."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD: keep up to this much freed at the top
    except (OSError, AttributeError):  # not glibc: its default stays
        pass


def event_loop_factory():
    """uvloop's event loop (requirements-serve.txt pins it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def keep_binary_tensors_binary():
    """KServe 0.21 decodes a binary tensor (InferRequest.from_bytes) and then turns it into a Python
    list of its values (InferInput.set_data_from_numpy(..., binary_data=False)): ~170 ms for one
    299 x 299 image on a loaded core, more than the model. Here that call keeps the bytes instead
    (as_numpy reads them with np.frombuffer), for numeric tensors that arrived as bytes; and
    from_bytes slices the body through a memoryview, so each tensor is a view, not a copy, of it."""
    from kserve.protocol.infer_type import InferInput, InferRequest
    original = InferInput.set_data_from_numpy
    if getattr(original, "keeps_binary", False):
        return

    def set_data_from_numpy(self, input_tensor, binary_data=True):
        if not binary_data and self._raw_data is not None and self.datatype != "BYTES":
            return  # already held as bytes of this datatype and shape
        return original(self, input_tensor, binary_data)

    from_bytes = InferRequest.from_bytes.__func__

    def from_body_view(cls, req_bytes, json_length, model_name):
        return from_bytes(cls, memoryview(req_bytes), json_length, model_name)

    set_data_from_numpy.keeps_binary = True
    InferInput.set_data_from_numpy = set_data_from_numpy
    InferRequest.from_bytes = classmethod(from_body_view)


def quiet_kserve_logs():
    """Our one line per request instead of uvicorn's access line, KServe's timing lines and its
    traceback for every refused request (a server error, 5xx, still logs KServe's traceback)."""
    import warnings
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").disabled = True
    kserve_log = logging.getLogger("kserve")
    if not any(isinstance(item, RefusedRequestFilter) for item in kserve_log.filters):
        kserve_log.addFilter(RefusedRequestFilter())
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s serve: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


class RefusedRequestFilter(logging.Filter):
    """Drops KServe's error handlers' tracebacks for 4xx answers (our request line says it)."""

    def filter(self, record):
        return not (record.module == "errors" and record.funcName != "generic_exception_handler")
