"""Convert the frozen model to OpenVINO IR at one precision: FP32, FP16 or INT8.

The IR has a static input of one image, [1, size, size, 3] NHWC float32 in the frozen
model's value range (scripts/preprocess.py makes it), and returns the softmax over the
labels. FP32 keeps float32 weights, FP16 stores them as float16, and INT8 is NNCF
post-training quantization of the FP32 model, calibrated on the first N training images
in shard order (so the same inputs give the same IR).

``model.json`` beside ``model.xml`` records the input, the preprocessing contract, the
labels and the precision; the labels and the contract are also in the IR's rt_info
under ``deployment``, so the .xml alone says how to feed it.

    python -m scripts.ir --model-pb P --precision FP16 --out-dir results/default/ir/FP16
    python -m scripts.ir --model-pb P --precision INT8 --train-tfrecords T... \
        --int8-calibration-images 300 --out-dir results/default/ir/INT8
"""
import argparse
import glob
import itertools
import json
import os
import shutil
import tempfile

import numpy as np

from scripts import atomic, tfrecords
from scripts.bottlenecks import preprocessed_batches
from scripts.core.errors import PipelineError, run_cli

PRECISIONS = ("FP32", "FP16", "INT8")
IR_FILES = ("model.bin", "model.json", "model.xml")  # published in this order: .xml last
RT_INFO_SECTION = "deployment"
TEMP_PREFIX = ".ir.tmp-"  # the hidden folder an IR is written to before it is published


def input_spec(contract):
    """{"input_size", "input_range"} as scripts/bottlenecks.preprocessed_batches wants it."""
    preprocessing = contract["preprocessing"]
    return {"input_size": preprocessing["input_shape"][1], "input_range": preprocessing["input_range"]}


def note_suffix(note):
    """The note in parentheses for printed summaries, e.g. " (untrained backbone)"."""
    return f" ({note})" if note else ""


def model_contract(model_pb):
    """The model.json written by the freeze stage beside ``model_pb``."""
    path = os.path.join(os.path.dirname(model_pb), "model.json")
    if not os.path.isfile(path):
        raise PipelineError(f"{path}: missing; the frozen model's contract must be beside {model_pb}")
    return atomic.read_json(path)


def calibration_images(train_tfrecords, contract, count, threads=1):
    """The first ``count`` training images in shard order, preprocessed, each [1, S, S, 3]."""
    examples = itertools.islice(tfrecords.read_examples(train_tfrecords), count)
    images = [pixels[index:index + 1]
              for pixels, _ in preprocessed_batches(examples, input_spec(contract), 32, threads)
              for index in range(len(pixels))]
    if not images:
        raise PipelineError(f"{train_tfrecords[0]}: no training images to calibrate INT8 with")
    return images


def convert(model_pb, contract, precision, calibration=None):
    """The OpenVINO model of the frozen graph with a static batch of one, at ``precision``."""
    import openvino as ov
    size = contract["preprocessing"]["input_shape"][1]
    model = ov.convert_model(model_pb, input=[1, size, size, 3])
    if precision == "INT8":
        import nncf
        # The full bias correction (not NNCF's fast one) costs seconds and keeps MobileNet's
        # INT8 accuracy: on the ALL test set 0.0 points lost instead of 2.1.
        model = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                              fast_bias_correction=False)
    model.set_rt_info(json.dumps(contract["labels"]), [RT_INFO_SECTION, "labels"])
    model.set_rt_info(json.dumps(contract["preprocessing"], sort_keys=True),
                      [RT_INFO_SECTION, "preprocessing"])
    return model


def ir_description(model, contract, precision, calibration_count):
    """model.json of one IR: how to feed it and where it came from."""
    import openvino as ov
    preprocessing = contract["preprocessing"]
    description = {
        "schema_version": 1,
        "precision": precision,
        "files": {"xml": "model.xml", "bin": "model.bin"},
        "input": {"name": model.input(0).get_any_name(), "shape": list(model.input(0).get_shape()),
                  "layout": preprocessing["input_layout"], "dtype": preprocessing["input_dtype"],
                  "range": preprocessing["input_range"]},
        "output": {"name": model.output(0).get_any_name(), "shape": list(model.output(0).get_shape()),
                   "dtype": "float32", "meaning": "softmax probabilities, classes in `labels` order"},
        "preprocessing": preprocessing,
        "labels": contract["labels"],
        "openvino_version": ov.get_version(),
        "untrained_backbone": contract["untrained_backbone"],
        "note": contract["note"],
    }
    if precision == "INT8":
        import nncf
        description.update(nncf_version=nncf.__version__, int8_calibration_images=calibration_count)
    return description


def publish(temp_dir, out_dir):
    """Move the IR files into ``out_dir``; an .xml is never beside another run's .bin."""
    old_xml = os.path.join(out_dir, "model.xml")
    if os.path.exists(old_xml):
        os.remove(old_xml)
    for name in IR_FILES:
        os.replace(os.path.join(temp_dir, name), os.path.join(out_dir, name))


def save_ir(model, contract, precision, out_dir, calibration_count=0):
    """Write model.xml, model.bin and model.json to ``out_dir``; return the description."""
    import openvino as ov
    os.makedirs(out_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(out_dir), TEMP_PREFIX + "*")):  # a killed run's
        shutil.rmtree(stale, ignore_errors=True)
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=out_dir)
    try:
        # FP16 halves the weights; INT8 keeps its float parts in FP32 so that its accuracy
        # drop is the quantization's alone.
        ov.save_model(model, os.path.join(temp_dir, "model.xml"), compress_to_fp16=precision == "FP16")
        description = ir_description(model, contract, precision, calibration_count)
        atomic.write_json(os.path.join(temp_dir, "model.json"), description)
        publish(temp_dir, out_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return description


def export_ir(model_pb, precision, out_dir, train_tfrecords=(), calibration_count=0, threads=1):
    """Convert the frozen model at one precision and write its IR to ``out_dir``."""
    if precision not in PRECISIONS:
        raise PipelineError(f"config key export.precisions: unknown precision {precision!r}")
    contract = model_contract(model_pb)
    calibration = None
    if precision == "INT8":
        if not train_tfrecords or calibration_count < 1:
            raise PipelineError("config key export.int8_calibration_images: INT8 needs training images")
        calibration = calibration_images(list(train_tfrecords), contract, calibration_count, threads)
    model = convert(model_pb, contract, precision, calibration)
    return save_ir(model, contract, precision, out_dir, len(calibration or ()))


def compile_ir(core, ir_xml, device, performance_hint, threads=None):
    """Compile an IR; on the CPU in float32, so that FP32 and FP16 mean what they say.

    (The CPU plugin would otherwise run float parts in bf16 where the processor has it.)
    """
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


class IrModel:
    """An IR on the CPU, called like FrozenModel: pixels [N, S, S, 3] -> outputs [N, ...].

    The batch is split into single images over asynchronous requests.
    """

    def __init__(self, ir_xml, threads=1):
        import openvino as ov
        compiled = compile_ir(ov.Core(), ir_xml, "CPU", "THROUGHPUT", threads)
        self.requests = ov.AsyncInferQueue(compiled)  # the CPU's optimal number of requests

    def __call__(self, pixels):
        outputs = [None] * len(pixels)

        def collect(request, index):
            outputs[index] = request.get_output_tensor(0).data.copy()

        run_async(self.requests, ((index, {0: pixels[index:index + 1]}) for index in range(len(pixels))), collect)
        return np.concatenate(outputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-pb", required=True, help="frozen_model.pb (model.json beside it)")
    parser.add_argument("--precision", choices=PRECISIONS, required=True)
    parser.add_argument("--out-dir", required=True, help="folder for model.xml, model.bin, model.json")
    parser.add_argument("--train-tfrecords", nargs="*", default=[], help="INT8: training shards, in order")
    parser.add_argument("--int8-calibration-images", type=int, default=0, help="INT8: images to calibrate on")
    parser.add_argument("--threads", type=int, default=1, help="image decoding threads")
    args = parser.parse_args(argv)
    description = export_ir(args.model_pb, args.precision, args.out_dir, args.train_tfrecords,
                            args.int8_calibration_images, args.threads)
    calibrated = (f", calibrated on {description['int8_calibration_images']} training images"
                  if args.precision == "INT8" else "")
    print(f"wrote {args.precision} IR to {args.out_dir}{calibrated}{note_suffix(description['note'])}")


if __name__ == "__main__":
    run_cli(main)
