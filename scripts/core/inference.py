"""Running models: a frozen TensorFlow graph or an OpenVINO IR, over arrays or TFRecords.

Every stage that runs a network uses this module: bottlenecks (backbone.pb or its IR),
the freeze check (frozen_model.pb), IR evaluation and benchmarks (IRs), ``predict``
(either). A model is a callable ``pixels [N, S, S, 3] float32 -> outputs [N, ...]``.

``run_over_tfrecords`` is the one loop that feeds a model the images of TFRecord files:
a pool of threads decodes and preprocesses (scripts/core/images.py) the next batch while
the current one runs, and at most two batches are in flight, so memory follows the batch
size, not the shard.
"""
import concurrent.futures
import os
import queue
import threading

import numpy as np

from scripts.core import images, model_check, records, tfcompat
from scripts.core.progress import Progress

_DONE = object()


# ------------------------------------------------------------------ TensorFlow
def load_graph_def(path):
    """A GraphDef from a binary .pb file, checked before anything runs it (scripts/core/model_check.py)."""
    return model_check.load_graph_def(path, tfcompat.tf_v1().GraphDef)


def tensor_name(name):
    """``name:0`` for a node name, the name itself for a tensor name."""
    return name if ":" in name else name + ":0"


class GraphModel:
    """A frozen GraphDef (or a .pb path) in a graph-mode session, from one tensor to another.

    ``output_tensor`` may be a list of tensor names: the model then returns a list of arrays.
    """

    def __init__(self, graph, input_tensor, output_tensor, threads=1):
        tf = tfcompat.tf_v1()
        graph_def = load_graph_def(graph) if isinstance(graph, str) else graph
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        model_check.check_tensor_sizes(self.graph, graph if isinstance(graph, str) else "the graph")
        self.session = tf.Session(graph=self.graph, config=tf.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1))
        self.input = self.graph.get_tensor_by_name(tensor_name(input_tensor))
        if isinstance(output_tensor, (list, tuple)):
            self.output = [self.graph.get_tensor_by_name(tensor_name(name)) for name in output_tensor]
        else:
            self.output = self.graph.get_tensor_by_name(tensor_name(output_tensor))

    def __call__(self, pixels):
        return self.session.run(self.output, {self.input: pixels})

    def output_width(self):
        return int(np.prod(self.output.shape[1:]))


# ------------------------------------------------------------------ OpenVINO
def compile_ir(core, ir_xml, device, performance_hint, threads=None):
    """Compile an IR; on the CPU in float32, so that FP32 and FP16 mean what they say.

    (The CPU plugin would otherwise run float parts in bf16 where the processor has it.)
    """
    if isinstance(ir_xml, (str, os.PathLike)):  # a file: checked before OpenVINO reads it
        model_check.check_ir(os.fspath(ir_xml))
    config = {"PERFORMANCE_HINT": performance_hint}
    if device.split(".")[0] == "CPU":
        config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(ir_xml, device, config)


def run_async(requests, jobs, collect):
    """Run ``(job, inputs)`` pairs on an AsyncInferQueue; ``collect(request, job)`` each result.

    Results are collected when their request is next idle, and after ``wait_all``, not
    in a Python callback: a callback can still wait for the GIL while the queue is being
    freed, and the process deadlocks.
    """
    pending = {}  # request index -> the job whose result it holds once idle
    for job, inputs in jobs:
        index = requests.get_idle_request_id()  # waits for a free request; start_async takes it
        if index in pending:
            collect(requests[index], pending.pop(index))
        pending[index] = job
        requests.start_async(inputs)
    requests.wait_all()
    for index, job in pending.items():
        collect(requests[index], job)


def single_image_model(core, ir_xml):
    """The IR (a path or an ov.Model) with its batch fixed at one image.

    A free batch is fixed here because the CPU plugin picks other INT8 kernels for static
    and dynamic shapes (MobileNet's INT8 features differ by up to 4%); deployed IRs are
    static, so features computed this way are the ones they compute.
    """
    if isinstance(ir_xml, (str, bytes)) or hasattr(ir_xml, "__fspath__"):
        model_check.check_ir(ir_xml)
        model = core.read_model(ir_xml)
    else:  # an in-memory model, made by this process
        model = ir_xml
    shape = model.input(0).get_partial_shape()
    if shape.is_dynamic:
        model.reshape([1, *(dimension.get_length() for dimension in list(shape)[1:])])
    return model


class IrModel:
    """An IR run one image at a time, called on a batch: the images go over asynchronous requests.

    ``ir_xml`` is a path or an ov.Model. With ``outputs`` (tensor names) the model returns
    a list of arrays, one per name; without, its first output.
    """

    def __init__(self, ir_xml, threads=1, device="CPU", outputs=None):
        import openvino as ov
        core = ov.Core()
        self.compiled = compile_ir(core, single_image_model(core, ir_xml), device, "THROUGHPUT", threads)
        self.requests = ov.AsyncInferQueue(self.compiled)  # the device's optimal number of requests
        self.outputs = list(outputs) if outputs else None

    def _read(self, request):
        if self.outputs is None:
            return request.get_output_tensor(0).data.copy()
        return [request.get_tensor(name).data.copy() for name in self.outputs]

    def __call__(self, pixels):
        outputs = [None] * len(pixels)

        def collect(request, index):
            outputs[index] = self._read(request)

        run_async(self.requests, ((index, {0: pixels[index:index + 1]}) for index in range(len(pixels))),
                  collect)
        if self.outputs is None:
            return np.concatenate(outputs)
        return [np.concatenate([output[which] for output in outputs]) for which in range(len(self.outputs))]


# ------------------------------------------------------------------ feeding images
def _batches(items, batch_size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def preprocessed_batches(examples, contract, batch_size, threads, prepare=None):
    """Yield (pixels [B, S, S, 3], examples) while the next batch is being prepared.

    ``prepare(example) -> pixels`` defaults to the contract's preprocessing of the
    example's encoded image.
    """
    prepare = prepare or (lambda example: images.preprocess_image(example["encoded"], contract))
    ready = queue.Queue(maxsize=1)  # one batch waiting + one being prepared = bounded memory

    def produce():
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for batch in _batches(examples, batch_size):
                    ready.put((np.stack(list(pool.map(prepare, batch))), batch))
            ready.put(_DONE)
        except BaseException as error:  # hand the failure to the consumer
            ready.put(error)

    threading.Thread(target=produce, daemon=True).start()
    while (item := ready.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


def run_over_examples(model, contract, examples, batch_size, threads, label=None, prepare=None, total=None):
    """Run ``model`` over examples (dicts with encoded, label, sha256, filename), in order.

    Returns (outputs [N, ...] or None when there are none, labels, sha256s, file names).
    With ``label``, progress lines (count, rate, ETA) go to stderr.
    """
    outputs, labels, hashes, names = [], [], [], []
    progress = Progress(label, total) if label else None
    for pixels, batch in preprocessed_batches(examples, contract, batch_size, threads, prepare):
        outputs.append(model(pixels))
        labels += [example["label"] for example in batch]
        hashes += [example["sha256"] for example in batch]
        names += [example["filename"] for example in batch]
        if progress:
            progress.update(len(batch))
    return (np.concatenate(outputs) if outputs else None), labels, hashes, names


def run_over_tfrecords(model, contract, tfrecord_paths, batch_size, threads, label=None, prepare=None):
    """``run_over_examples`` over every image of the TFRecord files."""
    total = count_records(tfrecord_paths) if label else None
    return run_over_examples(model, contract, records.read_examples(tfrecord_paths), batch_size, threads,
                             label, prepare, total)


def count_records(tfrecord_paths):
    """The number of records, from their length headers (the data is skipped, not read)."""
    count = 0
    for path in tfrecord_paths:
        with open(path, "rb") as handle:
            while header := handle.read(12):
                length = int.from_bytes(header[:8], "little")
                handle.seek(length + 4, 1)
                count += 1
    return count


def load_backbone(model_path, info, threads):
    """backbone.pb in TensorFlow, or a backbone .xml in OpenVINO: pixels -> features [N, D]."""
    if model_path.endswith(".xml"):
        model = IrModel(model_path, threads)
    else:
        model = GraphModel(model_path, info["input_tensor"], info["bottleneck_tensor"], threads)
    return lambda pixels: model(pixels).reshape(len(pixels), -1)
