"""Atomic outputs: write to a temporary name in the same folder, then rename.

A run killed half-way leaves only a hidden ``.<name>.tmp-*`` file, never a half-written
file under the final name that Snakemake (or a person) could take as finished; the
next attempt at the same output removes such leftovers.
"""
import contextlib
import csv
import glob
import json
import os
import shutil
import tempfile


def _remove_stale(folder, name):
    """Remove temporaries of this output left by a killed run (Snakemake runs one job per output)."""
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*")):
        if os.path.isdir(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.remove(stale)


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
        if os.path.isdir(final_dir):
            shutil.rmtree(final_dir)
        os.replace(temp, final_dir)
    finally:
        if os.path.isdir(temp):
            shutil.rmtree(temp)


def write_bytes(path, data):
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
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
    with atomic_path(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
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
