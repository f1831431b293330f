"""Atomic outputs: nothing under the final name until the write is complete."""
import os
import subprocess

import pytest

from scripts.core import atomic


def test_a_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic.atomic_path(str(target)) as temp:
        with open(temp, "w") as handle:
            handle.write("half")
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "old").write_text("kept")
    with pytest.raises(RuntimeError), atomic.atomic_dir(str(target)) as temp:
        open(os.path.join(temp, "new"), "w").close()
        raise RuntimeError("killed")
    assert os.listdir(target) == ["old"] and os.listdir(tmp_path) == ["folder"]


def test_leftovers_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".out.txt.tmp-dead1").write_text("partial")
    (tmp_path / ".out.txt.tmp-dead2").mkdir()
    (tmp_path / ".other.txt.tmp-x").write_text("not ours")
    atomic.write_text(str(tmp_path / "out.txt"), "done")
    assert sorted(os.listdir(tmp_path)) == [".other.txt.tmp-x", "out.txt"]
    assert (tmp_path / "out.txt").read_text() == "done"
    assert oct((tmp_path / "out.txt").stat().st_mode & 0o777) == oct(0o644)


def test_tables_round_trip(tmp_path):
    atomic.write_table(str(tmp_path / "t.tsv"), ["a", "b"], [["x y", 1], ["é", 2]])
    assert atomic.read_table(str(tmp_path / "t.tsv")) == [{"a": "x y", "b": "1"}, {"a": "é", "b": "2"}]


@pytest.fixture
def deep_tmp(tmp_path):
    """tmp_path, emptied by rm -rf afterwards even if the test fails: pytest's own cleanup
    (shutil.rmtree) would hit the recursion limit on a tree left behind."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--", str(tmp_path)], check=True)


def deep_tree(root, depth):
    """``depth`` nested folders below ``root`` with a file at the bottom; returns the bottom folder."""
    folder = str(root)
    os.mkdir(folder)
    for _ in range(depth):
        folder = os.path.join(folder, "d")
        os.mkdir(folder)
    open(os.path.join(folder, "leaf"), "w").close()
    return folder


def test_remove_tree_handles_trees_deeper_than_the_recursion_limit(deep_tmp):
    tmp_path = deep_tmp
    deep_tree(tmp_path / "deep", 1500)  # shutil.rmtree raises RecursionError here
    atomic.remove_tree(str(tmp_path / "deep"))
    assert os.listdir(tmp_path) == []


def test_remove_tree_removes_links_but_not_their_targets(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("kept")
    (tmp_path / "tree").mkdir()
    os.symlink(tmp_path / "keep", tmp_path / "tree" / "folder-link")
    os.symlink(tmp_path / "keep" / "file", tmp_path / "tree" / "file-link")
    atomic.remove_tree(str(tmp_path / "tree"))
    assert os.listdir(tmp_path) == ["keep"] and (tmp_path / "keep" / "file").read_text() == "kept"


def test_a_folder_write_replaces_a_deep_old_folder_and_a_deep_leftover(deep_tmp):
    tmp_path = deep_tmp
    deep_tree(tmp_path / "folder", 1200)
    deep_tree(tmp_path / ".folder.tmp-dead", 1200)
    with atomic.atomic_dir(str(tmp_path / "folder")) as temp:
        open(os.path.join(temp, "new"), "w").close()
    assert os.listdir(tmp_path) == ["folder"] and os.listdir(tmp_path / "folder") == ["new"]
