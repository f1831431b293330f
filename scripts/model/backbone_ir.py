"""The backbone as OpenVINO IR at one precision: FP32, FP16 (weights stored as half) or INT8.

INT8 is NNCF post-training quantization of the FP32 model, calibrated on the first N
training images in shard order (so the same inputs give the same IR), with the full
bias correction and (by default) NNCF's overflow fix in every layer, so that the IR
keeps its accuracy on CPUs without VNNI too (docs/int8.md). The IR has a free batch
dimension. Bottlenecks at a precision come from this file, and every deployed IR of that precision is this backbone with a head
appended (scripts/deploy/ir.py), so a head trained on INT8 features is deployed on the
very INT8 backbone that computed them.

    python -m scripts.model.backbone_ir --backbone-pb P --backbone-json J --precision FP32 --output-xml X
    python -m scripts.model.backbone_ir ... --precision INT8 --train-tfrecords T... \
        --calibration-images 300 --central-fraction 1.0 --resize bilinear --overflow-fix enable --threads 2
"""
import argparse
import itertools

from scripts.core import atomic, formats, images, model_check, records
from scripts.core.backbones import PRECISIONS
from scripts.core.errors import PipelineError, run_cli
from scripts.core.inference import preprocessed_batches

OVERFLOW_FIXES = ("enable", "first_layer_only", "disable")  # NNCF's OverflowFix values
DEFAULT_OVERFLOW_FIX = "enable"


def calibration_images(train_tfrecords, contract, count, threads):
    """The first ``count`` training images in shard order, preprocessed, each [1, S, S, 3]."""
    examples = itertools.islice(records.read_examples(train_tfrecords), count)
    batches = preprocessed_batches(examples, contract, 32, threads)
    calibration = [pixels[index:index + 1] for pixels, _ in batches for index in range(len(pixels))]
    if not calibration:
        raise PipelineError(f"{train_tfrecords[0]}: no training images to calibrate INT8 with")
    return calibration


def quantize(model, calibration, overflow_fix=DEFAULT_OVERFLOW_FIX):
    """NNCF post-training quantization.

    overflow_fix: "enable" halves the weights' range in every layer so that 8-bit kernels
    without VNNI (AVX2), which sum pairs of products in 16 bits, cannot saturate;
    "first_layer_only" (NNCF's default) does it in the first layer only, "disable" nowhere.
    See docs/int8.md for what each costs on which CPU.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    # The full bias correction (not NNCF's fast one) costs seconds and keeps MobileNet's
    # INT8 accuracy: on the ALL test set 0.0 points lost instead of 2.1.
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                         fast_bias_correction=False,
                         advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix)))


def convert(backbone_pb, backbone_json, precision, output_xml, train_tfrecords=(), calibration_count=0,
            contract=None, threads=1, overflow_fix=DEFAULT_OVERFLOW_FIX):
    """Write the backbone IR at ``precision``; return the number of calibration images (INT8)."""
    import openvino as ov
    if precision not in PRECISIONS:
        raise PipelineError(f"config key export.precisions: unknown precision {precision!r}")
    info = atomic.read_json(backbone_json)
    size = info["input_size"]
    # backbone.pb has exactly one Placeholder and ends at the features.
    model_check.check_graph_file(backbone_pb)  # before OpenVINO's converter reads it
    model = ov.convert_model(backbone_pb, input=[-1, size, size, 3])
    used = 0
    if precision == "INT8":
        if not train_tfrecords or calibration_count < 1:
            raise PipelineError("config key bottlenecks.int8_calibration_images: INT8 needs training images")
        calibration = calibration_images(train_tfrecords, contract, calibration_count, threads)
        model = quantize(model, calibration, overflow_fix)
        used = len(calibration)
    formats.write_ir(model, output_xml, compress_to_fp16=precision == "FP16")
    return used


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone-pb", required=True)
    parser.add_argument("--backbone-json", required=True)
    parser.add_argument("--precision", choices=PRECISIONS, required=True)
    parser.add_argument("--output-xml", required=True, help="the .bin is written beside it")
    parser.add_argument("--train-tfrecords", nargs="*", default=[], help="INT8: training shards, in order")
    parser.add_argument("--calibration-images", type=int, default=0, help="INT8: images to calibrate on")
    parser.add_argument("--central-fraction", type=float, help="INT8: the calibration images' preprocessing")
    parser.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), help="INT8: as --central-fraction")
    parser.add_argument("--overflow-fix", choices=OVERFLOW_FIXES, default=DEFAULT_OVERFLOW_FIX,
                        help="INT8: NNCF's overflow fix (enable: every layer, safe on CPUs without VNNI)")
    parser.add_argument("--threads", type=int, required=True, help="image decoding threads")
    args = parser.parse_args(argv)
    contract = None
    if args.precision == "INT8":
        info = atomic.read_json(args.backbone_json)
        contract = images.preprocessing_contract(info["input_size"], info["input_range"], args.central_fraction,
                                                 args.resize)
    used = convert(args.backbone_pb, args.backbone_json, args.precision, args.output_xml, args.train_tfrecords,
                   args.calibration_images, contract, args.threads, args.overflow_fix)
    calibrated = f", calibrated on {used} training images" if used else ""
    print(f"wrote {args.precision} backbone IR {args.output_xml}{calibrated}")


if __name__ == "__main__":
    run_cli(main)
