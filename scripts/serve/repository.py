"""The model repository OpenVINO Model Server and KServe load: results/serving/.

    python -m scripts.serve.repository model --name default --ir-xml X --ir-json J \
        [--model-card M] --output-dir results/serving/models/default/1 \
        --pixels-output-dir results/serving/models/default_pixels/1
    python -m scripts.serve.repository config --names default --output results/serving/config.json

``model`` copies the deployed IR (model.xml, model.bin) with its ir.json, labels.json and
model card into an OVMS version folder, and writes beside it the same IR with the
preprocessing built in (scripts/serve/pixels.py: u8 [1, H, W, 3] RGB of any size), a model of
its own (``<name>_pixels``) so that a server can take raw pixels or, in OVMS, JPEG/PNG bytes.
Without a model card from the pipeline, the card written is a short one made from ir.json
that says so. ``config`` writes OVMS's config.json, with base paths relative to it.
"""
import argparse
import os
import shutil

from scripts.core import atomic, formats
from scripts.core.contract import note_suffix
from scripts.core.errors import run_cli
from scripts.serve import pixels

PIXELS_SUFFIX = "_pixels"
# As scripts/core/inference.compile_ir compiles for the pipeline's checks and benchmarks.
PLUGIN_CONFIG = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}


def copy_file(source, target):
    with atomic.atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def short_card(name, description):
    """A model card from ir.json alone, for a run whose pipeline made none."""
    contract = description["preprocessing"]
    return "\n".join([
        f"# {name}{note_suffix(description.get('note'))}",
        "",
        "No full model card was made by this run; this one is written from ir.json.",
        "",
        f"- Precision: {description['precision']}",
        f"- Labels: {', '.join(description['labels'])}",
        f"- Input: {description['input']['shape']} {contract['input_layout']} {contract['input_dtype']}, "
        f"range {contract['input_range']}, {contract['color_order']}",
        f"- Preprocessing: central fraction {contract['central_fraction']}, {contract['resize']} resize "
        f"({contract['definition']})",
        f"- Test-time views: {description.get('test_time_views', [0])}",
        "- A research tool, not a diagnostic device.",
        "",
    ])


def write_model(name, paths, output_dir, pixels_dir):
    """One model's version folder and its pixel-input twin."""
    description = atomic.read_json(paths["ir_json"])
    bin_path = os.path.splitext(paths["ir_xml"])[0] + ".bin"
    card = None
    if paths.get("model_card"):
        with open(paths["model_card"], encoding="utf-8") as handle:
            card = handle.read()
    card = card or short_card(name, description)
    pixel_description = dict(description, input={
        "name": pixels.INPUT_NAME, "shape": [1, -1, -1, 3], "layout": "NHWC", "dtype": "uint8", "range": [0, 255],
        "meaning": "decoded RGB pixels of any size; crop, resize and scaling are inside the model"})
    for folder, desc in ((output_dir, description), (pixels_dir, pixel_description)):
        os.makedirs(folder, exist_ok=True)
        atomic.write_json(os.path.join(folder, "ir.json"), desc)
        formats.write_labels(os.path.join(folder, "labels.json"), description["labels"])
        atomic.write_text(os.path.join(folder, "model_card.md"), card)
    copy_file(bin_path, os.path.join(output_dir, "model.bin"))
    copy_file(paths["ir_xml"], os.path.join(output_dir, "model.xml"))  # the xml last: it says "finished"
    pixels.save_pixel_ir(paths["ir_xml"], os.path.join(pixels_dir, "model.xml"), description["preprocessing"])
    return description


def ovms_config(names):
    """OVMS's config.json: each model and its pixel twin, base paths relative to the file."""
    entries = []
    for name in names:
        for served in (name, name + PIXELS_SUFFIX):
            entries.append({"config": {"name": served, "base_path": f"models/{served}",
                                       "plugin_config": PLUGIN_CONFIG}})
    return {"model_config_list": entries}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="one model's version folder and its pixel-input twin")
    model.add_argument("--name", required=True)
    model.add_argument("--ir-xml", required=True)
    model.add_argument("--ir-json", required=True)
    model.add_argument("--model-card", help="the pipeline's model card (model_card.md), where it made one")
    model.add_argument("--output-dir", required=True)
    model.add_argument("--pixels-output-dir", required=True)
    config = commands.add_parser("config", help="OVMS's config.json")
    config.add_argument("--names", nargs="+", required=True)
    config.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.command == "config":
        atomic.write_json(args.output, ovms_config(args.names))
        print(f"wrote {args.output}: {len(args.names) * 2} models")
        return
    paths = {"ir_xml": args.ir_xml, "ir_json": args.ir_json, "model_card": args.model_card}
    description = write_model(args.name, paths, args.output_dir, args.pixels_output_dir)
    print(f"wrote {args.output_dir} ({description['precision']}) and {args.pixels_output_dir}"
          f"{note_suffix(description.get('note'))}")


if __name__ == "__main__":
    run_cli(main)
