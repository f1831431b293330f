"""Sorting a raw tree into class folders: layouts, class map, rejects, conversions, duplicates."""
import os
import re
import signal
import socket
import subprocess
import sys
import tracemalloc
import types
import unicodedata

import numpy as np
import pytest
from PIL import Image

from scripts.core import atomic
from scripts.core.errors import PipelineError
from scripts.data import structure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- helpers

def save(path, image, format=None, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, format, **options)
    return path


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def rgb(colour, size=(8, 6)):
    return Image.new("RGB", size, colour)


def two_classes(raw):
    """Minimal valid tree: one JPEG in each of classes a and b."""
    save(f"{raw}/a/a1.jpg", rgb((200, 10, 10)))
    save(f"{raw}/b/b1.jpg", rgb((10, 200, 10)))


def run(tmp_path, raw=None, **options):
    """Run ``structure`` into tmp_path; return its summary and tables."""
    raw = str(raw or tmp_path / "raw")
    out = str(tmp_path / "out")
    paths = {name: str(tmp_path / name) for name in ("index.tsv", "rejects.tsv", "duplicates.tsv", "summary.json")}
    options.setdefault("layout", "folders")
    summary = structure.structure(raw, out, paths["index.tsv"], paths["rejects.tsv"], paths["duplicates.tsv"],
                                  paths["summary.json"], **options)
    index = atomic.read_table(paths["index.tsv"])
    return types.SimpleNamespace(
        summary=summary, out=out, index=index, paths=paths,
        by_name={os.path.basename(row["source"]): row for row in index},
        rejects={os.path.basename(row["source"]): row["reason"] for row in atomic.read_table(paths["rejects.tsv"])},
        duplicates=atomic.read_table(paths["duplicates.tsv"]))


def pixels(path):
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image, dtype=np.int64)


# ---------------------------------------------------------------- layouts and class map

def test_folders_layout_uses_the_folder_holding_each_file(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/batch 2/c/c1.png", rgb((10, 10, 200)))
    save(f"{raw}/a/.hidden.jpg", rgb((1, 2, 3)))
    save(f"{raw}/.cache/d/d1.jpg", rgb((4, 5, 6)))
    save(f"{raw}/__MACOSX/a/a1.jpg", rgb((7, 8, 9)))
    result = run(tmp_path)
    assert [(row["label"], os.path.basename(row["path"])) for row in result.index] == \
        [("a", "a1.jpg"), ("b", "b1.jpg"), ("c", "c1.png")]
    assert result.index[0]["path"] == result.index[0]["source"] == os.path.join(str(raw), "a", "a1.jpg")
    assert result.summary == {"classes": {"a": 1, "b": 1, "c": 1}, "images": 3, "rejects": 0,
                              "rejects_by_reason": {}, "duplicates": 0}
    assert atomic.read_json(result.paths["summary.json"]) == result.summary
    assert os.listdir(result.out) == ["c"]  # only converted images are written; JPEGs stay in place
    # Only final names remain: no temporary files or folders.
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_file_directly_in_raw_folder_is_rejected(tmp_path):
    two_classes(tmp_path / "raw")
    save(f"{tmp_path}/raw/loose.jpg", rgb((1, 1, 1)))
    result = run(tmp_path)
    assert result.rejects == {"loose.jpg": structure.NO_CLASS_FOLDER}
    assert result.summary["rejects_by_reason"] == {structure.NO_CLASS_FOLDER: 1}


def test_filename_layout_takes_the_first_group(tmp_path):
    raw = tmp_path / "raw"
    save(f"{raw}/Im001_1.jpg", rgb((200, 0, 0)))
    save(f"{raw}/sub/Im002_0.jpg", rgb((0, 200, 0)))
    save(f"{raw}/notes.jpg", rgb((0, 0, 200)))
    result = run(tmp_path, layout="filename", filename_regex=r"^Im\d+_(\d+)\.")
    assert {name: row["label"] for name, row in result.by_name.items()} == {"Im001_1.jpg": "1", "Im002_0.jpg": "0"}
    assert result.rejects == {"notes.jpg": structure.NO_NAME_MATCH}


def test_filename_layout_prefers_the_group_named_label(tmp_path):
    raw = tmp_path / "raw"
    save(f"{raw}/p01-benign-3.jpg", rgb((200, 0, 0)))
    save(f"{raw}/p02-blast-4.jpg", rgb((0, 200, 0)))
    result = run(tmp_path, layout="filename", filename_regex=r"p(\d+)-(?P<label>[a-z]+)-")
    assert sorted(row["label"] for row in result.index) == ["benign", "blast"]


def test_class_map_renames_and_merges_first_full_match_wins(tmp_path):
    raw = tmp_path / "raw"
    for number, name in enumerate(["Benign", "Early", "Pre", "Pro", "Prefix", "Other"]):
        save(f"{raw}/{name}/{name}.jpg", rgb((number * 40, 0, 0)))
    class_map = {"Benign": "healthy", "Early|Pre|Pro": "ALL", "Pr.*": "Pr-other", "Prefix": "fixed"}
    result = run(tmp_path, class_map=class_map)
    assert {name: row["label"] for name, row in result.by_name.items()} == {
        "Benign.jpg": "healthy", "Early.jpg": "ALL", "Pre.jpg": "ALL", "Pro.jpg": "ALL",
        "Prefix.jpg": "Pr-other", "Other.jpg": "Other"}
    assert result.summary["classes"] == {"ALL": 3, "Other": 1, "Pr-other": 1, "healthy": 1}
    assert result.by_name["Pre.jpg"]["path"] == os.path.join(str(raw), "Pre", "Pre.jpg")


@pytest.mark.parametrize("options, key", [
    ({"layout": "filename", "filename_regex": "(unclosed"}, "dataset.filename_regex"),
    ({"layout": "filename", "filename_regex": "no group"}, "dataset.filename_regex"),
    ({"class_map": {"[": "x"}}, "dataset.class_map"),
    ({"class_map": {"a": "../escape"}}, "dataset.class_map"),
])
def test_bad_regex_or_class_name_is_a_one_line_error_naming_the_key(tmp_path, options, key):
    two_classes(tmp_path / "raw")
    with pytest.raises(PipelineError, match=key) as caught:
        run(tmp_path, **options)
    assert "\n" not in str(caught.value)
    assert not os.path.exists(tmp_path / "out")


def test_command_line_bad_regex_exits_1_with_one_error_line(tmp_path):
    two_classes(tmp_path / "raw")
    command = [sys.executable, "-m", "scripts.data.structure", "--raw", str(tmp_path / "raw"),
               "--out", str(tmp_path / "out"), "--index", str(tmp_path / "i.tsv"),
               "--rejects", str(tmp_path / "r.tsv"), "--duplicates", str(tmp_path / "d.tsv"),
               "--summary", str(tmp_path / "s.json"), "--layout", "filename", "--filename-regex", "([",
               "--threads", "1", "--max-image-bytes", "1000000"]
    completed = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "dataset.filename_regex" in lines[0]


def test_command_line_with_class_map(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/c/c1.jpg", rgb((0, 0, 200)))
    structure.main(["--raw", str(raw), "--out", str(tmp_path / "out"), "--index", str(tmp_path / "i.tsv"),
                    "--rejects", str(tmp_path / "r.tsv"), "--duplicates", str(tmp_path / "d.tsv"),
                    "--summary", str(tmp_path / "s.json"), "--class-map", '{"a|b": "ab"}', "--threads", "1",
                    "--layout", "folders", "--max-image-bytes", "1000000"])
    assert atomic.read_json(tmp_path / "s.json")["classes"] == {"ab": 2, "c": 1}


# ---------------------------------------------------------------- rejects

def test_each_unusable_file_is_rejected_with_its_reason_and_the_run_goes_on(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/a/empty.jpg", b"")
    write(f"{raw}/a/text.jpg", b"just some notes, not a picture\n")
    whole = read(save(f"{tmp_path}/whole.jpg", Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))))
    write(f"{raw}/b/truncated.jpg", whole[: len(whole) // 2])
    result = run(tmp_path)
    assert result.rejects["empty.jpg"] == structure.EMPTY
    assert result.rejects["text.jpg"] == structure.NOT_AN_IMAGE
    assert result.rejects["truncated.jpg"].startswith(structure.CORRUPT)
    assert sorted(result.by_name) == ["a1.jpg", "b1.jpg"]
    assert result.summary["rejects"] == 3
    assert result.summary["rejects_by_reason"] == {structure.EMPTY: 1, structure.NOT_AN_IMAGE: 1,
                                                   structure.CORRUPT: 1}


def test_unreadable_file_is_rejected_not_fatal(tmp_path):
    # A folder cannot be read as a file, even by root (unlike a chmod 000 file).
    assert structure.decode(str(tmp_path)).reason.startswith(structure.UNREADABLE)


@pytest.mark.parametrize("side", [12, 20])  # over the limit (a warning in Pillow) and over twice it
def test_decompression_bomb_is_rejected(tmp_path, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    two_classes(tmp_path / "raw")  # 8x6 = 48 pixels: under the limit
    save(f"{tmp_path}/raw/a/bomb.png", rgb((0, 0, 0), (side, side)))
    result = run(tmp_path)
    assert result.rejects == {"bomb.png": structure.BOMB}


# ---------------------------------------------------------------- conversions

def test_plain_rgb_jpeg_is_used_in_place(tmp_path):
    two_classes(tmp_path / "raw")
    save(f"{tmp_path}/raw/a/upper.JPEG", rgb((9, 9, 9)))
    result = run(tmp_path)
    for name in ("a1.jpg", "upper.JPEG"):
        row = result.by_name[name]
        assert row["path"] == row["source"]
    assert (result.by_name["a1.jpg"]["width"], result.by_name["a1.jpg"]["height"]) == ("8", "6")
    assert os.listdir(result.out) == []  # nothing stored a second time


def test_jpeg_with_another_extension_is_copied_under_a_jpg_name(tmp_path):
    two_classes(tmp_path / "raw")
    save(f"{tmp_path}/raw/a/photo.png", rgb((9, 9, 9)), "JPEG")
    row = run(tmp_path).by_name["photo.png"]
    assert os.path.basename(row["path"]) == "photo.jpg"
    assert read(row["path"]) == read(row["source"])


def conversion_cases(raw):
    """{file name: expected RGB of pixel (0, 0)} for images that must become RGB PNGs."""
    save(f"{raw}/a/gray.jpg", Image.new("L", (8, 8), 90))
    save(f"{raw}/a/cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    save(f"{raw}/a/palette.gif", rgb((0, 0, 255), (8, 8)).convert("P"))
    frames = [rgb((255, 0, 0), (8, 8)).convert("P"), rgb((0, 0, 255), (8, 8)).convert("P")]
    save(f"{raw}/a/animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :, 0] = 255
    rgba[:, 4:, 3] = 255  # left half transparent, right half opaque red
    save(f"{raw}/a/alpha.png", Image.fromarray(rgba, "RGBA"))
    save(f"{raw}/a/deep.png", Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)))
    return {"gray.jpg": (90, 90, 90), "cmyk.jpg": (255, 0, 0), "palette.gif": (0, 0, 255),
            "animated.gif": (255, 0, 0), "alpha.png": (255, 255, 255), "deep.png": (128, 128, 128)}


def test_other_images_become_rgb_png(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    expected = conversion_cases(raw)
    result = run(tmp_path)
    assert result.summary["rejects"] == 0
    for name, colour in expected.items():
        row = result.by_name[name]
        assert row["path"] == os.path.join(result.out, "a", os.path.splitext(name)[0] + ".png")
        image = pixels(row["path"])
        assert np.abs(image[0, 0] - colour).max() <= 3, name
    assert np.abs(pixels(result.by_name["alpha.png"]["path"])[0, 7] - (255, 0, 0)).max() <= 3


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    exif = Image.Exif()
    exif[structure.EXIF_ORIENTATION] = 6  # stored sideways: rotate 90 degrees to show
    save(f"{raw}/a/rotated.jpg", rgb((50, 100, 150), (16, 8)), exif=exif.tobytes())
    row = run(tmp_path).by_name["rotated.jpg"]
    assert (row["width"], row["height"]) == ("8", "16")
    with Image.open(row["path"]) as image:
        assert image.format == "PNG" and image.size == (8, 16)
        assert image.getexif().get(structure.EXIF_ORIENTATION) is None


def test_unusual_names_and_a_one_pixel_image_are_kept(tmp_path):
    raw = tmp_path / "raw"
    save(f"{raw}/Blasten ü/Zelle Nr 1 ö.jpg", rgb((200, 0, 0)))
    save(f"{raw}/其他 class/dot.png", rgb((0, 200, 0), (1, 1)))
    result = run(tmp_path)
    row = result.by_name["Zelle Nr 1 ö.jpg"]
    assert row["label"] == "Blasten ü"
    assert row["path"] == os.path.join(str(raw), "Blasten ü", "Zelle Nr 1 ö.jpg")
    assert os.path.isfile(row["path"])
    dot = result.by_name["dot.png"]
    assert (dot["label"], dot["width"], dot["height"]) == ("其他 class", "1", "1")
    assert dot["path"] == os.path.join(result.out, "其他 class", "dot.png")
    assert os.path.isfile(dot["path"])


# ---------------------------------------------------------------- duplicates and name clashes

def test_duplicates_are_kept_once_and_reported(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    original = read(f"{raw}/a/a1.jpg")
    write(f"{raw}/a/a2 copy.jpg", original)
    write(f"{raw}/b/b2.jpg", original)
    result = run(tmp_path)
    assert sorted(result.by_name) == ["a1.jpg", "b1.jpg"]
    kept = os.path.join(str(raw), "a", "a1.jpg")
    sha256 = result.by_name["a1.jpg"]["sha256"]
    assert [(row["source"], row["kept"], row["sha256"]) for row in result.duplicates] == [
        (os.path.join(str(raw), "a", "a2 copy.jpg"), kept, sha256),
        (os.path.join(str(raw), "b", "b2.jpg"), kept, sha256)]
    assert result.duplicates[0]["note"] == "same label"
    assert result.duplicates[1]["note"].startswith("conflicting labels a/b")
    assert result.summary["duplicates"] == 2


def test_same_name_in_one_class_gets_a_hash_suffix(tmp_path):
    # Only converted images are written under OUT/<class>/, so only they can clash.
    raw = tmp_path / "raw"
    save(f"{raw}/set1/a/x.png", rgb((200, 0, 0)))
    save(f"{raw}/set2/a/x.png", rgb((0, 200, 0)))
    save(f"{raw}/set2/a/X.gif", rgb((0, 100, 0)))
    save(f"{raw}/set2/b/y.png", rgb((0, 0, 200)))
    result = run(tmp_path)
    names = sorted(os.path.basename(row["path"]) for row in result.index if row["label"] == "a")
    second, upper = (next(row["sha256"][:8] for row in result.index
                          if row["source"].endswith(os.path.join("set2", "a", name))) for name in ("x.png", "X.gif"))
    # casefold: "X.png" would be "x.png" on a case-insensitive file system.
    assert names == sorted(["x.png", f"x-{second}.png", f"X-{upper}.png"])
    assert all(os.path.isfile(row["path"]) for row in result.index)


# ---------------------------------------------------------------- whole-run errors

def test_fewer_than_two_classes_is_an_error(tmp_path):
    save(f"{tmp_path}/raw/a/a1.jpg", rgb((200, 0, 0)))
    with pytest.raises(PipelineError, match=r"found 1 class \(a\) in .*raw; need at least two"):
        run(tmp_path)
    assert not os.path.exists(tmp_path / "out")


def test_class_whose_files_were_all_rejected_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/c/broken.jpg", read(f"{raw}/a/a1.jpg")[:100])
    with pytest.raises(PipelineError, match="'c'.*rejects.tsv") as caught:
        run(tmp_path)
    assert "\n" not in str(caught.value)
    assert "broken.jpg" in read(tmp_path / "rejects.tsv").decode()  # the error's pointer exists


def test_folder_holding_only_non_images_is_not_a_class(tmp_path):
    # E.g. flower_photos/LICENSE.txt next to the class folders.
    two_classes(tmp_path / "raw")
    write(f"{tmp_path}/raw/LICENSE.txt", b"license text")
    write(f"{tmp_path}/raw/docs/README.txt", b"read me")
    result = run(tmp_path)
    assert result.summary["classes"] == {"a": 1, "b": 1}
    assert result.rejects == {"LICENSE.txt": structure.NO_CLASS_FOLDER, "README.txt": structure.NOT_AN_IMAGE}


def test_output_folder_overlapping_raw_folder_is_an_error(tmp_path):
    two_classes(tmp_path / "raw")
    with pytest.raises(PipelineError, match="overlap"):
        structure.structure(str(tmp_path / "raw"), str(tmp_path / "raw" / "out"), *(
            str(tmp_path / name) for name in ("i.tsv", "r.tsv", "d.tsv", "s.json")), layout="folders")
    assert sorted(os.listdir(tmp_path / "raw")) == ["a", "b"]


# ---------------------------------------------------------------- issue 17: untrusted folders and class names

@pytest.fixture
def no_hang():
    """Fail instead of hanging for ever (a FIFO opened for reading waits for a writer)."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("structure hung"))
    signal.alarm(60)
    yield
    signal.alarm(0)


def test_only_regular_files_inside_the_folder_are_read(tmp_path, monkeypatch, no_hang):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{tmp_path}/elsewhere/out.jpg", rgb((1, 2, 3)))
    save(f"{raw}/a/.store/kept.jpg", rgb((4, 5, 6)))  # hidden: reached only through the link below
    os.mkfifo(raw / "a" / "fifo.jpg")
    links = {"zero.jpg": "/dev/zero", "passwd.jpg": "/etc/passwd", "outside.jpg": f"{tmp_path}/elsewhere/out.jpg",
             "up.jpg": "../../elsewhere/out.jpg", "inside.jpg": ".store/kept.jpg", "folder.jpg": "../b",
             "root.jpg": "../../raw",
             "dangling.jpg": "missing.jpg"}
    for name, target in links.items():
        os.symlink(target, raw / "a" / name)
    monkeypatch.chdir(raw / "a")  # a socket's path must be short
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("socket.jpg")
        monkeypatch.chdir(tmp_path)
        result = run(tmp_path, threads=2)
    assert result.rejects == {
        "fifo.jpg": f"{structure.NOT_REGULAR} (a FIFO)", "socket.jpg": f"{structure.NOT_REGULAR} (a socket)",
        "folder.jpg": f"{structure.NOT_REGULAR} (a link to a folder, not followed)",
        "root.jpg": f"{structure.NOT_REGULAR} (a link to a folder, not followed)", "zero.jpg": structure.OUTSIDE_LINK,
        "passwd.jpg": structure.OUTSIDE_LINK, "outside.jpg": structure.OUTSIDE_LINK, "up.jpg": structure.OUTSIDE_LINK,
        "dangling.jpg": f"{structure.UNREADABLE} ([Errno 2] No such file or directory: "
                        f"'{raw / 'a' / 'dangling.jpg'}')"}
    assert sorted(result.by_name) == ["a1.jpg", "b1.jpg", "inside.jpg"]
    assert result.by_name["inside.jpg"]["path"] == os.path.join(str(raw), "a", "inside.jpg")


def test_a_file_swapped_for_a_fifo_after_listing_is_not_waited_for(tmp_path, no_hang):
    os.mkfifo(tmp_path / "fifo.jpg")
    reason = structure.decode(str(tmp_path / "fifo.jpg")).reason
    assert reason == f"{structure.UNREADABLE} ({structure.NOT_REGULAR})"


def test_postscript_is_never_handed_to_ghostscript(tmp_path):
    two_classes(tmp_path / "raw")
    write(f"{tmp_path}/raw/a/evil.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    assert run(tmp_path).rejects == {"evil.jpg": structure.NOT_AN_IMAGE}


def test_files_over_the_byte_cap_are_rejected_unread(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/a/large.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)))
    with open(raw / "b" / "huge.jpg", "wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse: costs no disk
    tracemalloc.start()
    try:
        result = run(tmp_path, max_image_bytes=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000
    size = os.path.getsize(raw / "a" / "large.png")
    assert result.rejects == {"large.png": f"{structure.TOO_LARGE} ({size} > 2000 bytes)",
                              "huge.jpg": f"{structure.TOO_LARGE} ({1 << 30} > 2000 bytes)"}
    assert result.summary["rejects_by_reason"] == {structure.TOO_LARGE: 2}


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    deep = os.path.join(str(raw), *["d"] * 1200)
    try:
        os.makedirs(os.path.dirname(deep))  # makedirs recurses over missing parents: make them in steps
    except RecursionError:
        for depth in range(1, 1201):
            os.makedirs(os.path.join(str(raw), *["d"] * depth), exist_ok=True)
    os.makedirs(deep, exist_ok=True)
    try:
        save(os.path.join(deep, "deep.jpg"), rgb((7, 7, 7)))
        result = run(tmp_path)
        assert result.by_name["deep.jpg"]["label"] == "d"
        assert result.summary["classes"] == {"a": 1, "b": 1, "d": 1}
    finally:
        subprocess.run(["rm", "-rf", "--", str(raw)], check=True)  # pytest's cleanup recurses


def test_unreadable_folder_is_rejected_and_the_run_goes_on(tmp_path, monkeypatch):
    two_classes(tmp_path / "raw")
    save(f"{tmp_path}/raw/c/locked/c1.jpg", rgb((0, 0, 9)))
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so the refusal is simulated
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(structure.os, "scandir", scandir)
    result = run(tmp_path)
    assert result.rejects == {"locked": f"{structure.UNREADABLE_FOLDER} ([Errno 13] Permission denied: "
                                        f"'{tmp_path / 'raw' / 'c' / 'locked'}')"}


def test_file_name_that_is_not_utf8_is_rejected_and_listed_readably(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(os.fsencode(str(raw)) + b"/a/caf\xe9.jpg", read(f"{raw}/a/a1.jpg")[:-2] + b"\xff\xd9")
    result = run(tmp_path)
    assert result.rejects == {"caf\\xe9.jpg": structure.BAD_FILE_NAME}


@pytest.mark.parametrize("name, problem", [
    ("new\nline", "U+000A"), ("tab\there", "U+0009"), ("line\u2028separator", "U+2028"),
    ("evil\u202egnp.exe", "U+202E"), ("nul\x7f", "U+007F"),
])
def test_class_name_with_a_control_character_is_a_one_line_error(tmp_path, name, problem):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/{name}/x.jpg", rgb((5, 5, 5)))
    with pytest.raises(PipelineError, match=re.escape(f"holds a control character ({problem}); rename it")) as caught:
        run(tmp_path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 250
    assert not os.path.exists(tmp_path / "out")


def test_class_name_that_is_not_utf8_is_a_one_line_error(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(os.fsdecode(os.fsencode(str(raw)) + b"/caf\xe9/x.jpg"), rgb((5, 5, 5)))
    with pytest.raises(PipelineError, match=r"class name 'caf\\udce9' .* is not valid UTF-8"):
        run(tmp_path)


def test_filename_layout_class_with_a_tab_is_a_one_line_error(tmp_path):
    save(f"{tmp_path}/raw/a\tb_1.jpg", rgb((1, 1, 1)))
    save(f"{tmp_path}/raw/c_2.jpg", rgb((2, 2, 2)))
    with pytest.raises(PipelineError, match=r"class name 'a\\tb' of 'a\\tb_1.jpg' holds a control character"):
        run(tmp_path, layout="filename", filename_regex=r"^(.+)_\d")


def test_class_names_are_normalised_to_nfc(tmp_path):
    raw = tmp_path / "raw"
    save(f"{raw}/{unicodedata.normalize('NFD', 'café')}/x.jpg", rgb((1, 1, 1)))
    save(f"{raw}/tea/y.jpg", rgb((2, 2, 2)))
    result = run(tmp_path)
    assert result.by_name["x.jpg"]["label"] == unicodedata.normalize("NFC", "café")
    assert result.summary["classes"] == {unicodedata.normalize("NFC", "café"): 1, "tea": 1}


def test_class_names_equal_after_normalisation_are_refused(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/{unicodedata.normalize('NFC', 'café')}/x.jpg", rgb((1, 1, 1)))
    save(f"{raw}/{unicodedata.normalize('NFD', 'café')}/y.jpg", rgb((2, 2, 2)))
    with pytest.raises(PipelineError) as caught:
        run(tmp_path)
    message = str(caught.value)  # ascii() shows how the two differ
    names = ("'caf\\xe9'", "'cafe\\u0301'")
    assert message.startswith(tuple(f"class names {first} and {second} (at "
                                    for first, second in (names, names[::-1])))
    assert message.endswith("are the same after Unicode normalisation; rename one")
    assert not os.path.exists(tmp_path / "out")


def test_class_names_differing_only_in_case_are_refused_unless_merged(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    save(f"{raw}/Cat/x.jpg", rgb((1, 1, 1)))
    save(f"{raw}/cat/y.jpg", rgb((2, 2, 2)))
    with pytest.raises(PipelineError, match="class names 'Cat' and 'cat' differ only in case"):
        run(tmp_path)
    assert run(tmp_path, class_map={"[Cc]at": "cat"}).summary["classes"] == {"a": 1, "b": 1, "cat": 2}


def test_class_map_names_are_checked_and_normalised(tmp_path):
    two_classes(tmp_path / "raw")
    with pytest.raises(PipelineError, match=r"config key dataset.class_map: 'x\\ny' cannot be a class name"):
        run(tmp_path, class_map={"a": "x\ny"})
    nfd = unicodedata.normalize("NFD", "é")
    assert run(tmp_path, class_map={"a": nfd}).summary["classes"] == {"b": 1, unicodedata.normalize("NFC", "é"): 1}


def test_errors_point_at_copies_that_outlive_the_failed_job(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/c/broken.jpg", read(f"{raw}/a/a1.jpg")[:100])
    copies = {"rejects_copy": str(tmp_path / "logs" / "structure_rejects.tsv"),
              "duplicates_copy": str(tmp_path / "logs" / "structure_duplicates.tsv")}
    with pytest.raises(PipelineError, match=f"class 'c' has no usable image: .*see {copies['rejects_copy']}"):
        run(tmp_path, **copies)
    for name in ("rejects.tsv", "duplicates.tsv"):  # what Snakemake does with a failed job's outputs
        os.remove(tmp_path / name)
    assert [row["source"] for row in atomic.read_table(copies["rejects_copy"])] == [f"{raw}/c/broken.jpg"]
    assert atomic.read_table(copies["duplicates_copy"]) == []


def test_no_class_at_all_points_at_the_rejects(tmp_path):
    write(f"{tmp_path}/raw/notes.txt", b"x")
    with pytest.raises(PipelineError, match=r"found 0 classes \(\) in .*; need at least two; 1 files rejected "
                                            r"\(see .*r.tsv\)"):
        run(tmp_path, rejects_copy=str(tmp_path / "r.tsv"))


def test_index_paths_work_from_the_working_folder_through_to_the_tfrecords(tmp_path, monkeypatch):
    from scripts.core import records
    from scripts.data import split, tfrecord_shard
    work = tmp_path / "work"
    two_classes(work / "raw")
    save(f"{work}/raw/b/gray.png", Image.new("L", (4, 4), 50))
    monkeypatch.chdir(work)  # as Snakemake runs jobs in --directory, with relative paths
    structure.structure("raw", "results/images", "index.tsv", "rejects.tsv", "duplicates.tsv", "summary.json",
                        layout="folders")
    split.split("index.tsv", "manifest.tsv", "labels.json", "split.json", validation=0.0, test=0.0)
    rows = atomic.read_table("manifest.tsv")
    assert [row["path"] for row in rows] == ["raw/a/a1.jpg", "raw/b/b1.jpg", "results/images/b/gray.png"]
    tfrecord_shard.write_shard(rows, "train.tfrecord")
    stored = [example["encoded"] for example in records.read_examples(["train.tfrecord"])]
    assert stored == [read(row["path"]) for row in rows]


# ---------------------------------------------------------------- parallel decoding

def test_two_processes_give_identical_outputs(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(1)
    for number in range(40):  # more than one chunk per worker
        label = "abc"[number % 3]
        save(f"{raw}/{label}/img{number:02d}.jpg", Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)))
    conversion_cases(raw)
    write(f"{raw}/b/copy.jpg", read(f"{raw}/a/img00.jpg"))
    write(f"{raw}/c/empty.jpg", b"")

    def outputs(threads):
        result = run(tmp_path, threads=threads)
        files = {name: read(path) for name, path in result.paths.items()}
        for root, _, names in os.walk(result.out):
            files.update({os.path.join(root, name): read(os.path.join(root, name)) for name in names})
        return files

    single = outputs(1)
    assert len(single) == 4 + 6  # the tables and the converted images; the JPEGs stay in place
    assert single == outputs(2)


# ---------------------------------------------------------------- real data

def test_real_data_all_taleqani(tmp_path, shared_data):
    from scripts.data import split
    raw = os.path.join(shared_data, "all-taleqani")
    result = run(tmp_path, raw=raw, threads=2)
    assert len(result.index) == 3216
    assert result.summary["rejects"] == 0
    assert sorted(result.summary["classes"]) == ["Benign", "Early", "Pre", "Pro"]
    assert len(result.duplicates) == 40
    for row in result.duplicates:
        assert row["note"] == "same label"
        assert os.path.basename(os.path.dirname(row["source"])) == "Pro"
        assert os.path.basename(os.path.dirname(row["kept"])) == "Pro"

    split.split(result.paths["index.tsv"], str(tmp_path / "manifest.tsv"), str(tmp_path / "labels.json"),
                str(tmp_path / "split.json"), validation=0.1, test=0.2)
    splits_of = {}
    for row in atomic.read_table(tmp_path / "manifest.tsv"):
        splits_of.setdefault(row["sha256"], set()).add(row["split"])
    assert len(splits_of) == 3216
    assert all(len(splits) == 1 for splits in splits_of.values())

    merged = run(tmp_path / "merged", raw=raw, threads=2, class_map={"Benign": "healthy", "Early|Pre|Pro": "ALL"})
    assert merged.summary["classes"] == {"ALL": 2712, "healthy": 504}


# ---------------------------------------------------------------- issue 26: no class lost without a word

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head><body>Log in</body></html>\n"


def test_a_class_of_html_pages_named_jpg_stops_the_run_naming_class_folder_and_reason(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    for number in range(12):  # a failed scrape: every "image" is the site's login page
        write(f"{raw}/scraped/img{number:02d}.jpg", HTML_PAGE)
    with pytest.raises(PipelineError) as caught:
        run(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("class 'scraped' has no usable image: all 12 of its files were rejected "
                              f"({structure.NOT_AN_IMAGE}: 12; see ")
    assert f"folder '{raw / 'scraped'}'" in message
    assert not os.path.exists(tmp_path / "index.tsv")


def test_html_pages_without_an_image_name_still_count_as_the_class_s_images(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/c/download?id=1", HTML_PAGE)
    write(f"{raw}/c/download?id=2", b"\xef\xbb\xbf  <html><body>quota exceeded</body></html>")
    with pytest.raises(PipelineError, match=r"class 'c' has no usable image: all 2 of its files were rejected "
                                            rf"\({structure.NOT_AN_IMAGE}: 2; see "):
        run(tmp_path)


@pytest.mark.parametrize("make, reason", [
    (lambda path, jpeg: write(path, b""), structure.EMPTY),
    (lambda path, jpeg: write(path, b"just text\n"), structure.NOT_AN_IMAGE),
    (lambda path, jpeg: write(path, jpeg[:100]), structure.CORRUPT),
    (lambda path, jpeg: os.mkfifo(path), structure.NOT_REGULAR),
    (lambda path, jpeg: os.symlink("/etc/passwd", path), structure.OUTSIDE_LINK),
    (lambda path, jpeg: write(path, jpeg + b"\0" * 5000), structure.TOO_LARGE),
])
def test_a_class_whose_files_were_all_rejected_stops_the_run_for_every_reason(tmp_path, make, reason):
    raw = tmp_path / "raw"
    two_classes(raw)
    os.makedirs(raw / "c")
    jpeg = read(f"{raw}/a/a1.jpg")
    for number in range(3):
        make(str(raw / "c" / f"c{number}.jpg"), jpeg)
    with pytest.raises(PipelineError) as caught:
        run(tmp_path, max_image_bytes=4000)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"class 'c' has no usable image: all 3 of its files were rejected ({reason}: 3;")


def test_mixed_reasons_are_counted_and_copies_of_other_classes_named(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/c/page.jpg", HTML_PAGE)
    write(f"{raw}/c/empty.png", b"")
    write(f"{raw}/c/copy.jpg", read(f"{raw}/a/a1.jpg"))
    with pytest.raises(PipelineError) as caught:
        run(tmp_path)
    message = str(caught.value)
    assert message.startswith("class 'c' has no usable image: 2 of its 3 files were rejected (")
    assert f"{structure.NOT_AN_IMAGE}: 1" in message and f"{structure.EMPTY}: 1" in message
    assert "1 are copies of other classes' files (see " in message


def test_a_class_keeping_one_image_goes_on_and_notes_beside_images_are_no_class(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/a/page.jpg", HTML_PAGE)
    write(f"{raw}/annotations/labels.csv", b"file,label\n")
    write(f"{raw}/annotations/notes.md", b"# notes\n")
    result = run(tmp_path)
    assert result.summary["classes"] == {"a": 1, "b": 1}
    assert result.rejects["page.jpg"] == f"{structure.NOT_AN_IMAGE} (an HTML page)"
    assert result.rejects["labels.csv"] == structure.NOT_AN_IMAGE


def test_command_line_class_lost_is_one_error_line_and_exit_1(tmp_path):
    raw = tmp_path / "raw"
    two_classes(raw)
    write(f"{raw}/scraped/x.jpg", HTML_PAGE)
    names = ("index.tsv", "rejects.tsv", "duplicates.tsv", "summary.json")
    args = [f"--{name.split('.')[0]}={tmp_path / name}" for name in names]
    result = subprocess.run([sys.executable, "-m", "scripts.data.structure", "--raw", str(raw), "--out",
                             str(tmp_path / "out"), *args, "--layout", "folders", "--threads", "1",
                             "--max-image-bytes", "1000000"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: class 'scraped' has no usable image: all 1 of its files were rejected")
