"""The model repository (scripts/serve/repository.py) and the IR with the preprocessing built in
(scripts/serve/pixels.py), on a small real IR and real photos and cell images."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny_ir
from conftest import REPO, SHARED_DATA

from scripts.core import atomic, images
from scripts.serve import pixels, repository


def real_images(count=8):
    paths = sorted(glob.glob(os.path.join(SHARED_DATA, "all-taleqani", "*", "*.jpg")))[::400][:count // 2]
    paths += sorted(glob.glob(os.path.join(SHARED_DATA, "ants-bees", "*", "*.jpg")))[::50][:count // 2]
    assert len(paths) == count
    return paths


def identity(size):
    """An IR that returns its input: shows exactly what the preprocessing made."""
    import openvino as ov
    import openvino.opset13 as ops
    image = ops.parameter([1, size, size, 3], np.float32, name="input")
    return ov.Model([ops.result(ops.multiply(image, np.float32(1)))], [image], "identity")


def compiled(model):
    import openvino as ov
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.mark.parametrize("fraction,resize", [(1.0, "bilinear"), (0.875, "bilinear"), (1.0, "bicubic")])
def test_built_in_preprocessing_matches_the_project_preprocessing_on_real_images(fraction, resize):
    """Measured here (one step of 8 bits = 2/255 in [-1, 1]): without a crop at most one 8-bit step
    (bicubic: up to 8 on sharp edges, 99.5% within one) and >70% of values exact; with a crop the same inside, larger only at the crop's
    edge rows, where Pillow also samples pixels outside the box."""
    contract = images.preprocessing_contract(96, (-1.0, 1.0), fraction, resize)
    model = compiled(pixels.with_preprocessing(identity(96), contract))
    step = 2 / 255
    for path in real_images():
        rgb = images.decode_rgb(path)
        expected = images.preprocess_image(rgb, contract)
        got = model({0: np.asarray(rgb)[None]})[0][0]
        difference = np.abs(got - expected)
        inner = difference[2:-2, 2:-2] if fraction < 1 else difference
        assert inner.max() <= step * (8 if resize == "bicubic" else 1) * 1.01, path
        assert np.percentile(inner, 99.5) <= step * 1.01, path
        assert (difference < 1e-6).mean() > 0.7, path
        assert difference.mean() < step / 4, path


def test_built_in_preprocessing_takes_any_size():
    contract = images.preprocessing_contract(32, (0.0, 1.0), 0.5, "bilinear")
    model = compiled(pixels.with_preprocessing(identity(32), contract))
    for height, width in ((40, 90), (300, 17), (32, 32)):
        out = model({0: np.full((1, height, width, 3), 255, np.uint8)})[0]
        assert out.shape == (1, 32, 32, 3) and np.allclose(out, 1.0)


def test_the_repository_has_the_ovms_layout_the_ir_its_pixel_twin_and_a_card(tmp_path):
    xml = tiny_ir.build(str(tmp_path / "ir"), size=48)
    root = tmp_path / "serving"
    out, twin = root / "models" / "exp" / "1", root / "models" / "exp_pixels" / "1"
    subprocess.run([sys.executable, "-m", "scripts.serve.repository", "model", "--name", "exp", "--ir-xml", xml,
                    "--ir-json", str(tmp_path / "ir" / "ir.json"), "--output-dir", str(out),
                    "--pixels-output-dir", str(twin)], cwd=REPO, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "scripts.serve.repository", "config", "--names", "exp",
                    "--output", str(root / "config.json")], cwd=REPO, check=True, capture_output=True)
    for folder in (out, twin):
        assert sorted(os.listdir(folder)) == ["ir.json", "labels.json", "model.bin", "model.xml", "model_card.md"]
        assert atomic.read_json(folder / "labels.json") == tiny_ir.LABELS
    assert open(out / "model.bin", "rb").read() == open(tmp_path / "ir" / "model.bin", "rb").read()
    assert "No full model card" in open(out / "model_card.md").read()
    config = json.load(open(root / "config.json"))
    names = [entry["config"]["name"] for entry in config["model_config_list"]]
    assert names == ["exp", "exp_pixels"]
    for entry in config["model_config_list"]:
        assert os.path.isfile(root / entry["config"]["base_path"] / "1" / "model.xml")
    import openvino as ov
    twin_model = ov.Core().read_model(str(twin / "model.xml"))
    assert twin_model.input(0).get_element_type() == ov.Type.u8
    assert twin_model.input(0).get_partial_shape().is_dynamic
    assert json.loads(twin_model.get_rt_info(["deployment", "labels"]).astype(str)) == tiny_ir.LABELS


def test_a_pipeline_model_card_is_copied(tmp_path):
    xml = tiny_ir.build(str(tmp_path / "ir"), size=48)
    card = tmp_path / "model_card.md"
    card.write_text("# the real card\n")
    repository.write_model("exp", {"ir_xml": xml, "ir_json": str(tmp_path / "ir" / "ir.json"),
                                   "model_card": str(card)}, str(tmp_path / "a"), str(tmp_path / "b"))
    assert open(tmp_path / "a" / "model_card.md").read() == "# the real card\n"
