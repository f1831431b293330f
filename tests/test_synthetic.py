"""The offline shape data set: counts, names, determinism, size and distinct classes."""
import itertools
import os

import numpy as np
import pytest
from PIL import Image

from scripts.core.errors import PipelineError
from scripts.data import synthetic


def files_below(folder):
    """{relative path: bytes} of every file below ``folder``."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def test_counts_classes_and_names(tmp_path):
    count = synthetic.generate(str(tmp_path / "shapes"), classes=3, images_per_class=4, size=32, seed=0)
    assert count == 12
    assert sorted(os.listdir(tmp_path / "shapes")) == ["circle", "square", "triangle"]
    assert sorted(os.listdir(tmp_path / "shapes" / "triangle")) == [f"triangle_{i:03d}.jpg" for i in range(4)]
    # Nothing but the final folder is left behind.
    assert os.listdir(tmp_path) == ["shapes"]


def test_same_arguments_give_identical_bytes_and_another_seed_does_not(tmp_path):
    for name, seed in (("first", 7), ("second", 7), ("other", 8)):
        synthetic.generate(str(tmp_path / name), classes=2, images_per_class=3, size=40, seed=seed)
    first = files_below(tmp_path / "first")
    assert first == files_below(tmp_path / "second")
    other = files_below(tmp_path / "other")
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_images_decode_as_rgb_jpegs_of_the_given_size(tmp_path):
    synthetic.generate(str(tmp_path / "shapes"), classes=6, images_per_class=2, size=48, seed=1)
    for relative in files_below(tmp_path / "shapes"):
        with Image.open(tmp_path / "shapes" / relative) as image:
            image.load()
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))


def test_the_shapes_differ_for_the_same_random_draws():
    masks = {shape: synthetic.shape_mask(np.random.default_rng(3), shape, 64) > 0.5
             for shape in synthetic.SHAPES}
    for shape, mask in masks.items():
        assert 0.02 < mask.mean() < 0.6, shape  # visible but not the whole image
    for one, two in itertools.combinations(synthetic.SHAPES, 2):
        overlap = (masks[one] & masks[two]).sum() / (masks[one] | masks[two]).sum()
        assert overlap < 0.9, (one, two)


def test_the_shape_colour_stands_out_from_its_background():
    rng = np.random.default_rng(5)
    for index in range(300):
        background_mean = synthetic.background(rng, 16, index % 3, 3).mean(axis=(0, 1))
        colour = synthetic.shape_colour(rng, background_mean, index % 3, 3)
        assert np.abs(colour - background_mean).mean() >= synthetic.MIN_CONTRAST * 0.75
        assert ((0 <= colour) & (colour <= 255)).all()


def test_images_are_noisy_not_flat():
    image = np.asarray(synthetic.draw_image(np.random.default_rng(0), "square", 64), dtype=np.float64)
    # Neighbouring pixels differ: the background has grain, not a flat colour.
    assert np.abs(np.diff(image, axis=1)).mean() > 3


@pytest.mark.parametrize("classes", [1, 7])
def test_class_count_out_of_range_is_an_error(tmp_path, classes):
    with pytest.raises(PipelineError, match="synthetic.classes"):
        synthetic.generate(str(tmp_path / "shapes"), classes=classes, images_per_class=2, size=32, seed=0)
    assert not (tmp_path / "shapes").exists()


def test_command_line(tmp_path, capsys):
    synthetic.main(["--output", str(tmp_path / "shapes"), "--classes", "2", "--images-per-class", "3",
                    "--size", "24", "--seed", "0"])
    assert sorted(os.listdir(tmp_path / "shapes")) == ["circle", "square"]
    assert "wrote 6 images" in capsys.readouterr().out


def test_each_class_has_its_own_hue():
    """The colour cue that lets even an untrained backbone separate the classes."""
    import colorsys
    rng = np.random.default_rng(1)
    grey = np.array([128.0, 128.0, 128.0])
    for class_index in range(3):
        hues = [colorsys.rgb_to_hsv(*(synthetic.shape_colour(rng, grey, class_index, 3) / 255))[0]
                for _ in range(50)]
        distance = np.abs((np.array(hues) - class_index / 3 + 0.5) % 1.0 - 0.5)
        assert distance.max() < 0.05, class_index
