"""Atomic outputs: write to a temporary name in the same folder, then rename.

A run killed half-way leaves only a hidden ``.<name>.tmp-*`` file, never a half-written
file under the final name that Snakemake (or a person) could take as finished; the
next attempt at the same output removes such leftovers. Folders are removed without
recursion (``remove_tree``): an untrusted tree may be deeper than Python's stack.
"""
import contextlib
import csv
import glob
import json
import os
import tempfile


def remove_tree(path):
    """Remove ``path`` and everything below it, bottom-up with a stack instead of recursion.

    Links are removed, never followed. A folder is listed again once its subfolders are
    gone, so each is listed at most twice.
    """
    if not os.path.isdir(path) or os.path.islink(path):
        if os.path.lexists(path):
            os.remove(path)
        return
    stack = [path]
    while stack:
        folder = stack[-1]
        subfolders = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                else:
                    os.remove(entry.path)
        if subfolders:
            stack += subfolders
        else:
            os.rmdir(folder)
            stack.pop()


def _remove_stale(folder, name):
    """Remove temporaries of this output left by a killed run (Snakemake runs one job per output)."""
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*")):
        try:
            remove_tree(stale)
        except OSError:
            pass  # another attempt removes it; it never stands under the final name


def _temp_name(final_path):
    folder, name = os.path.split(os.path.abspath(final_path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale(folder, name)
    handle, temp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=folder)
    os.close(handle)
    os.chmod(temp, 0o644)  # mkstemp makes 0600; outputs are ordinary readable files
    return temp


@contextlib.contextmanager
def atomic_path(final_path):
    """Yield a temporary path; on success it is renamed to ``final_path``."""
    temp = _temp_name(final_path)
    try:
        yield temp
        os.replace(temp, final_path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_dir(final_dir):
    """Yield a temporary folder; on success it replaces ``final_dir``."""
    parent, name = os.path.split(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name)
    temp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(temp, 0o755)
    try:
        yield temp
        if os.path.lexists(final_dir):
            # Moved aside first, so a kill during the removal leaves only a temporary.
            old = tempfile.mkdtemp(prefix=f".{name}.tmp-old-", dir=parent)
            os.replace(final_dir, os.path.join(old, name))
            os.replace(temp, final_dir)
            remove_tree(old)
        else:
            os.replace(temp, final_dir)
    finally:
        if os.path.lexists(temp):
            remove_tree(temp)


def write_bytes(path, data):
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _delimiter(path):
    """Tables are CSV when named .csv, else tab-separated."""
    return "," if os.fspath(path).lower().endswith(".csv") else "\t"


def write_table(path, header, rows):
    """Write a table with a header line; the delimiter follows the name (.csv or .tsv)."""
    with atomic_path(path) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=_delimiter(path), lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_table(path):
    """Read a table written by ``write_table`` as a list of dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=_delimiter(path)))


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
