"""INT8 test accuracy of a finished run's selected model per NNCF overflow fix and per CPU instruction set.

For each overflow fix (`bottlenecks.int8_overflow_fix`) the run's backbone.pb is quantized
as the `backbone_ir` rule does (same calibration images and preprocessing); then, in a
fresh process per instruction set, the test split's features (plain and the test-time
views) are computed with that INT8 backbone and the selected head is applied, as the INT8
evaluation does. The instruction set is emulated with oneDNN's cap on this machine:
`ONEDNN_MAX_CPU_ISA=AVX2` makes OpenVINO's CPU plugin pick the AVX2 8-bit kernels
(jit_avx2_I8, no VNNI) that an AVX2-only processor runs; the kernels used are printed.

    python bench/bench_int8_isa.py --workdir W --config W/config.yaml [--isas native AVX2]
        [--fixes first_layer_only enable] [--threads 2]

Prints one line per (fix, ISA): INT8 accuracy, the trained model's, the drop in points.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.core import atomic, formats, images  # noqa: E402


def selected_experiment(results):
    path = os.path.join(results, "selected.json")
    return atomic.read_json(path)["experiment"] if os.path.exists(path) else "default"


def quantize(results, experiment, calibration_count, fix, output_xml, threads):
    from scripts.model import backbone_ir
    info_path = os.path.join(results, "backbone", "backbone.json")
    info = atomic.read_json(info_path)
    model = atomic.read_json(os.path.join(results, experiment, "model", "model.json"))
    preprocessing = model["preprocessing"]
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], preprocessing["central_fraction"],
                                             preprocessing["resize"])
    shards = sorted(glob.glob(os.path.join(results, "data", "tfrecords", "train-*.tfrecord")))
    backbone_ir.convert(os.path.join(results, "backbone", "backbone.pb"), info_path, "INT8", output_xml, shards,
                        calibration_count, contract, threads, fix)
    return preprocessing


def evaluate_in_child(results, experiment, backbone_xml, preprocessing, threads):
    """Test accuracy of the head on this INT8 backbone's features, in this process (run under an ISA cap)."""
    import numpy as np
    import openvino as ov

    from scripts.core import cpu
    from scripts.core import head as head_lib
    from scripts.core.inference import compile_ir, single_image_model
    from scripts.model import bottlenecks
    info_path = os.path.join(results, "backbone", "backbone.json")
    test = sorted(glob.glob(os.path.join(results, "data", "tfrecords", "test-*.tfrecord")))
    views = preprocessing.get("test_time_views", [0])
    features = []
    with tempfile.TemporaryDirectory() as folder:
        for view in views:
            kind = "plain" if view == 0 else f"view{view}"
            parts = []
            for index, shard in enumerate(test):
                output = os.path.join(folder, f"{kind}-{index}.npz")
                bottlenecks.compute_shard(backbone_xml, info_path, shard, output, kind,
                                          preprocessing["central_fraction"], preprocessing["resize"], 32, threads)
                parts.append(formats.read_bottlenecks(output))
            features.append(formats.concatenate_bottlenecks(parts))
    head = head_lib.load(os.path.join(results, experiment, "model", "head.npz"))
    probs = head_lib.view_probabilities(head, [view["features"] for view in features])
    accuracy = float(np.mean(probs.argmax(axis=1) == features[0]["labels"]))
    core = ov.Core()
    compiled = compile_ir(core, single_image_model(core, backbone_xml), "CPU", "LATENCY", threads)
    return {"accuracy": accuracy, "images": len(probs), "cpu": cpu.description(compiled)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished run's working directory")
    parser.add_argument("--calibration-images", type=int, default=None, help="default: the run's ir.json-free "
                        "config value, given with --config")
    parser.add_argument("--config", help="the run's merged config (for bottlenecks.int8_calibration_images)")
    parser.add_argument("--fixes", nargs="+", default=["first_layer_only", "enable"])
    parser.add_argument("--isas", nargs="+", default=["native", "AVX2"], help="native, or a ONEDNN_MAX_CPU_ISA value")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("EXPERIMENT", "XML", "PREPROCESSING_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results = os.path.join(args.workdir, "results")
    if args.child:
        experiment, xml, preprocessing = args.child
        print(json.dumps(evaluate_in_child(results, experiment, xml, json.loads(preprocessing), args.threads)))
        return
    count = args.calibration_images
    if count is None:
        import yaml
        with open(args.config or os.path.join(REPO, "config.yaml"), encoding="utf-8") as handle:
            count = yaml.safe_load(handle).get("bottlenecks", {}).get("int8_calibration_images", 300)
    experiment = selected_experiment(results)
    trained = float(formats.read_predictions(os.path.join(results, experiment, "model", "test_predictions.npz"))["accuracy"])
    model = atomic.read_json(os.path.join(results, experiment, "model", "model.json"))
    with tempfile.TemporaryDirectory() as folder:
        for fix in args.fixes:
            xml = os.path.join(folder, f"backbone-{fix}.xml")
            preprocessing = quantize(results, experiment, count, fix, xml, args.threads)
            preprocessing = {**preprocessing, "test_time_views": model.get("test_time_views", [0])}
            for isa in args.isas:
                env = {key: value for key, value in os.environ.items() if key not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
                if isa != "native":
                    env["ONEDNN_MAX_CPU_ISA"] = isa
                output = subprocess.run([sys.executable, __file__, "--workdir", args.workdir, "--threads", str(args.threads),
                                         "--child", experiment, xml, json.dumps(preprocessing)],
                                        env=env, capture_output=True, text=True, check=True).stdout
                measured = json.loads(output.strip().splitlines()[-1])
                drop = 100 * (trained - measured["accuracy"])
                print(f"overflow_fix={fix:16s} isa={isa:7s} INT8 accuracy {measured['accuracy']:.4f} "
                      f"(trained {trained:.4f}, {measured['images']} test images): drop {drop:+.2f} points; "
                      f"kernels {' '.join(measured['cpu']['kernels'])}", flush=True)


if __name__ == "__main__":
    main()
