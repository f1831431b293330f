"""Hash-stable train/validation/test split of the index."""
import collections
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
    assert {name: sum(summary[name].values()) for name in split.SPLITS} == counts


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
    assert sorted(summary) == ["group_by", "groups", "straddling_groups", "test", "train", "validation"]
    assert all(list(summary[name]) == labels for name in split.SPLITS)


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


# ---------------------------------------------------------------- groups (issue 23.4)
def grouped_index(path, groups, per_group=5, labels=("a", "b", "c"), start=0, top="raw"):
    """An index whose images sit in patient folders raw/<label>/P<n>/img<k>.jpg; a patient's
    images are mostly of one class, one of each patient's images is of the next class."""
    rows = []
    for group in range(start, start + groups):
        for image in range(per_group):
            label = labels[(group + (image == 0)) % len(labels)]
            sha256 = hashlib.sha256(f"{group}-{image}".encode()).hexdigest()
            source = f"{top}/{label}/P{group}/img{image}.jpg"
            rows.append((source, label, sha256, 64, 64, source))
    atomic.write_table(path, ("path", "label", "sha256", "width", "height", "source"), rows)
    return rows


def run_grouped(tmp_path, index, **options):
    paths = [str(tmp_path / name) for name in ("manifest.tsv", "labels.json", "split.json")]
    options = {"validation": 0.1, "test": 0.2, "raw_dir": "raw", "group_regex": r"^[^/]+/(P\d+)/", **options}
    split.split(str(index), *paths, **options)
    return atomic.read_table(paths[0]), atomic.read_json(paths[2])


def splits_of_groups(manifest):
    found = {}
    for row in manifest:
        found.setdefault(row["group"], set()).add(row["split"])
    return found


@pytest.mark.parametrize("stratify", [False, True])
def test_no_group_straddles_splits(tmp_path, stratify):
    grouped_index(tmp_path / "index.tsv", 60)
    manifest, summary = run_grouped(tmp_path, tmp_path / "index.tsv", stratify=stratify)
    found = splits_of_groups(manifest)
    assert len(found) == 60 and all(len(names) == 1 for names in found.values())
    assert {row["group"] for row in manifest} == {f"P{n}" for n in range(60)}
    # Every split holds groups, and the summary counts them.
    per_split = {name: sum(names == {name} for names in found.values()) for name in split.SPLITS}
    assert summary["groups"] == per_split and min(per_split.values()) >= 3
    assert summary["group_by"] == "group_regex" and summary["straddling_groups"]["count"] == 0


def test_adding_images_and_groups_does_not_move_existing_groups(tmp_path):
    grouped_index(tmp_path / "small.tsv", 100)
    before, _ = run_grouped(tmp_path, tmp_path / "small.tsv")
    rows = grouped_index(tmp_path / "large.tsv", 150, per_group=7)  # more images per patient and more patients
    after, _ = run_grouped(tmp_path, tmp_path / "large.tsv")
    assert len(after) == len(rows) == 150 * 7
    old = {row["sha256"]: row["split"] for row in before}
    assert all(old[row["sha256"]] == row["split"] for row in after if row["sha256"] in old)
    assert {row["group"]: row["split"] for row in before}.items() <= {row["group"]: row["split"] for row in after}.items()


def test_without_a_group_regex_the_group_is_the_content_hash_and_splits_are_as_before(tmp_path):
    rows = fake_index(tmp_path / "index.tsv", 200)
    splits, manifest, _, summary = run(tmp_path, tmp_path / "index.tsv")
    assert [row["group"] for row in manifest] == [row[2] for row in rows]
    # The content hash decides exactly as it did before groups existed.
    assert all(splits[row[2]] == split.split_of(row[2], 0.1, 0.2) for row in rows)
    assert summary["group_by"] == "content" and sum(summary["groups"].values()) == 200


def test_stratified_groups_give_every_class_its_share(tmp_path):
    # Few patients per class: hashing alone can leave a class without test patients.
    grouped_index(tmp_path / "index.tsv", 30, per_group=3)
    manifest, summary = run_grouped(tmp_path, tmp_path / "index.tsv", stratify=True, validation=0.2, test=0.2)
    majority = split.group_labels([{"label": row["label"]} for row in manifest], [row["group"] for row in manifest])
    for label in ("a", "b", "c"):
        groups = {row["group"]: row["split"] for row in manifest if majority[row["group"]] == label}
        counts = collections.Counter(groups.values())
        assert (counts["test"], counts["validation"], counts["train"]) == (2, 2, 6), (label, counts)
    assert all(len(names) == 1 for names in splits_of_groups(manifest).values())
    assert sum(summary["groups"].values()) == 30


def test_stratified_split_moves_only_groups_at_the_cut_points_when_groups_are_added(tmp_path):
    grouped_index(tmp_path / "small.tsv", 90, labels=("a",))
    before, _ = run_grouped(tmp_path, tmp_path / "small.tsv", stratify=True)
    grouped_index(tmp_path / "large.tsv", 91, labels=("a",))
    after, _ = run_grouped(tmp_path, tmp_path / "large.tsv", stratify=True)
    old = {row["group"]: row["split"] for row in before}
    moved = {row["group"] for row in after if row["group"] in old and old[row["group"]] != row["split"]}
    assert len(moved) <= 2


def test_a_path_without_a_group_is_an_error_naming_it(tmp_path):
    rows = grouped_index(tmp_path / "index.tsv", 10)
    rows.append(("raw/a/loose.jpg", "a", "f" * 64, 8, 8, "raw/a/loose.jpg"))
    atomic.write_table(tmp_path / "index.tsv", ("path", "label", "sha256", "width", "height", "source"), rows)
    with pytest.raises(PipelineError, match=r"split\.group_regex.*1 image path.*'a/loose\.jpg'"):
        run_grouped(tmp_path, tmp_path / "index.tsv")
    with pytest.raises(PipelineError, match="no capturing group"):
        run_grouped(tmp_path, tmp_path / "index.tsv", group_regex="P[0-9]+")


def test_predefined_folders_decide_and_a_missing_validation_folder_is_carved_from_train(tmp_path):
    rows = []
    for number in range(300):
        folder = "test" if number % 5 == 0 else "train"
        label = "ab"[number % 2]
        source = f"raw/data/{folder}/{label}/img{number}.jpg"
        rows.append((source, label, hashlib.sha256(str(number).encode()).hexdigest(), 8, 8, source))
    atomic.write_table(tmp_path / "index.tsv", ("path", "label", "sha256", "width", "height", "source"), rows)
    manifest, summary = run_grouped(tmp_path, tmp_path / "index.tsv", predefined=True, group_regex=None)
    by_path = {row["path"]: row["split"] for row in manifest}
    assert all(by_path[source] == "test" for source, *_ in rows if "/test/" in source)
    from_train = [by_path[source] for source, *_ in rows if "/train/" in source]
    assert set(from_train) == {"train", "validation"} and 10 <= from_train.count("validation") <= 45
    # A class folder named like a split is a class, not a split.
    assert split.predefined_split("data/train/test/img.jpg", "folders") == "train"
    assert split.predefined_split("data/Val/img_1.jpg", "filename") == "validation"
    assert split.predefined_split("data/a/img.jpg", "folders") is None
    assert summary["groups"]["test"] == 60
