"""Hash-stable train/validation/test split of the index."""
import hashlib
import itertools

import pytest

from scripts.core import atomic, formats
from scripts.core.errors import PipelineError
from scripts.data import split


def fake_index(path, count, labels=("healthy", "ALL", "blast"), start=0):
    """An index.tsv of ``count`` rows with made-up content hashes."""
    rows = []
    for number in range(start, start + count):
        sha256 = hashlib.sha256(str(number).encode()).hexdigest()
        label = labels[number % len(labels)]
        rows.append((f"out/{label}/img{number}.jpg", label, sha256, 224, 224, f"raw/{label}/img{number}.jpg"))
    atomic.write_table(path, ("path", "label", "sha256", "width", "height", "source"), rows)
    return rows


def run(tmp_path, index, validation=0.1, test=0.2, salt=""):
    """Split ``index``; return {sha256: split}, the manifest rows, labels and the summary."""
    paths = [str(tmp_path / name) for name in ("manifest.tsv", "labels.json", "split.json")]
    split.split(str(index), *paths, validation=validation, test=test, salt=salt)
    manifest = atomic.read_table(paths[0])
    labels = formats.read_labels(paths[1])
    return {row["sha256"]: row["split"] for row in manifest}, manifest, labels, atomic.read_json(paths[2])


def test_fractions_are_roughly_respected(tmp_path):
    fake_index(tmp_path / "index.tsv", 1000)
    splits, _, _, summary = run(tmp_path, tmp_path / "index.tsv", validation=0.1, test=0.2)
    counts = {name: list(splits.values()).count(name) for name in split.SPLITS}
    assert 60 <= counts["validation"] <= 140
    assert 150 <= counts["test"] <= 250
    assert counts["train"] == 1000 - counts["validation"] - counts["test"]
    assert {name: sum(per_class.values()) for name, per_class in summary.items()} == counts


def test_manifest_keeps_index_order_and_columns(tmp_path):
    rows = fake_index(tmp_path / "index.tsv", 30)
    _, manifest, labels, _ = run(tmp_path, tmp_path / "index.tsv")
    assert list(manifest[0]) == list(split.MANIFEST_HEADER)
    assert [row["path"] for row in manifest] == [row[0] for row in rows]
    assert all(labels[int(row["label_index"])] == row["label"] for row in manifest)
    assert manifest[0]["width"] == "224"


def test_adding_images_does_not_move_existing_ones(tmp_path):
    fake_index(tmp_path / "small.tsv", 1000)
    before, _, _, _ = run(tmp_path, tmp_path / "small.tsv")
    fake_index(tmp_path / "large.tsv", 1500)
    after, _, _, _ = run(tmp_path, tmp_path / "large.tsv")
    assert len(after) == 1500
    assert all(after[sha256] == name for sha256, name in before.items())


def test_salt_changes_the_assignment(tmp_path):
    fake_index(tmp_path / "index.tsv", 1000)
    plain, _, _, _ = run(tmp_path, tmp_path / "index.tsv")
    salted, _, _, _ = run(tmp_path, tmp_path / "index.tsv", salt="v2")
    moved = sum(plain[sha256] != salted[sha256] for sha256 in plain)
    assert moved > 200  # about 2 * 0.3 * 0.7 + 2 * 0.1 * 0.2 of them: ~46%


def test_labels_are_sorted_and_summary_lists_every_class_in_every_split(tmp_path):
    fake_index(tmp_path / "index.tsv", 300, labels=("b", "a", "C", "ä"))
    _, _, labels, summary = run(tmp_path, tmp_path / "index.tsv")
    assert labels == ["C", "a", "b", "ä"]
    assert sorted(summary) == ["test", "train", "validation"]
    assert all(list(per_class) == labels for per_class in summary.values())


def test_labels_file_cannot_be_mis_split(tmp_path):
    # Names that would shift every label of a line-per-name file round-trip unchanged.
    labels = ["new\nline", "tab\there", "line\u2028sep", "café", " spaced "]
    formats.write_labels(tmp_path / "labels.json", labels)
    assert formats.read_labels(tmp_path / "labels.json") == labels


def test_labels_file_with_a_name_twice_is_refused(tmp_path):
    (tmp_path / "labels.json").write_text('["a", "b", "a"]')
    with pytest.raises(PipelineError, match="listed twice"):
        formats.read_labels(tmp_path / "labels.json")


def test_class_without_training_images_is_an_error(tmp_path):
    rows = fake_index(tmp_path / "index.tsv", 200, labels=("a", "b"))
    # One more class whose only image is hashed into test.
    lonely = next(sha256 for sha256 in (hashlib.sha256(f"x{n}".encode()).hexdigest() for n in itertools.count())
                  if split.split_of(sha256, 0.1, 0.2) == "test")
    rows.append(("out/rare/one.jpg", "rare", lonely, 8, 8, "raw/rare/one.jpg"))
    atomic.write_table(tmp_path / "index.tsv", ("path", "label", "sha256", "width", "height", "source"), rows)
    with pytest.raises(PipelineError, match=r"'rare'.*no training images.*split\.validation") as caught:
        run(tmp_path, tmp_path / "index.tsv")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "manifest.tsv").exists()


def test_a_long_class_name_is_cut_short_in_the_error(tmp_path):
    rows = fake_index(tmp_path / "index.tsv", 200, labels=("a", "b"))
    lonely = next(sha256 for sha256 in (hashlib.sha256(f"x{n}".encode()).hexdigest() for n in itertools.count())
                  if split.split_of(sha256, 0.1, 0.2) == "test")
    rows.append(("out/r/one.jpg", "r" * 250, lonely, 8, 8, "raw/r/one.jpg"))
    atomic.write_table(tmp_path / "index.tsv", ("path", "label", "sha256", "width", "height", "source"), rows)
    with pytest.raises(PipelineError, match=r"\(250 characters\) in .* has no training images") as caught:
        run(tmp_path, tmp_path / "index.tsv")
    assert len(str(caught.value)) < 250 + len(str(tmp_path))


@pytest.mark.parametrize("validation, test", [(0.5, 0.5), (-0.1, 0.2), (0.1, 1.0)])
def test_bad_fractions_are_an_error_naming_the_key(tmp_path, validation, test):
    fake_index(tmp_path / "index.tsv", 10)
    with pytest.raises(PipelineError, match="config key split"):
        run(tmp_path, tmp_path / "index.tsv", validation=validation, test=test)


def test_command_line(tmp_path, capsys):
    fake_index(tmp_path / "index.tsv", 100)
    split.main(["--index", str(tmp_path / "index.tsv"), "--manifest", str(tmp_path / "m.tsv"),
                "--labels", str(tmp_path / "l.txt"), "--summary", str(tmp_path / "s.json"),
                "--validation", "0.1", "--test", "0.2", "--salt", "x"])
    assert len(atomic.read_table(tmp_path / "m.tsv")) == 100
    assert "-> " in capsys.readouterr().out
