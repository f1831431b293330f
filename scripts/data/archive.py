"""Unpack an untrusted zip or tar archive into a folder, refusing anything unsafe.

Archives from the internet are untrusted: the format comes from the file's first
bytes (never its name), every member is checked before anything is written (no
absolute paths, ``..``, backslashes, links or device files), and the unpacked size is
capped twice: by the sizes the headers declare, then by the bytes actually written.
Everything goes to a temporary folder that replaces the target only on success, so
a failure leaves no target folder and nothing is ever written outside it.

Entry point:
    python -m scripts.data.archive --archive FILE --output DIR [--max-bytes N]
"""
import argparse
import collections
import contextlib
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli

CHUNK_BYTES = 1 << 16
DEFAULT_MAX_BYTES = 10_000_000_000  # as download.max_extract_bytes in config.yaml
SUPPORTED = "zip, tar, tar.gz/.tgz, tar.bz2, tar.xz"
TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}
TAR_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}
# What a truncated or corrupt archive raises from the standard library's readers.
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
               zlib.error, lzma.LZMAError, OSError, ValueError, NotImplementedError)

# One member to unpack: a relative "/"-separated path, and for files a size and an opener.
Entry = collections.namedtuple("Entry", "path is_dir size open")


def extract(archive_path, target_dir, max_bytes):
    """Unpack ``archive_path`` into ``target_dir``; return the relative paths of its files."""
    archive_path = os.fspath(archive_path)
    kind = detect_format(archive_path)
    entries_of = zip_entries if kind == "zip" else tar_entries
    try:
        with atomic.atomic_dir(target_dir) as temp_dir:
            with entries_of(archive_path, kind) as entries:
                return unpack(archive_path, entries, temp_dir, max_bytes)
    except READ_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PipelineError(f"{archive_path}: cannot unpack this {kind} archive, "
                            f"truncated or corrupt? ({reason})") from error


def detect_format(archive_path):
    """The archive's format from its magic bytes: "zip", "tar", "tar.gz", "tar.bz2" or "tar.xz"."""
    try:
        with open(archive_path, "rb") as handle:
            head = handle.read(512)
    except OSError as error:
        raise PipelineError(f"{archive_path}: cannot read ({error.strerror})") from error
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip, or an empty zip
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"BZh"):
        return "tar.bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head[257:262] == b"ustar":  # POSIX, GNU and pax tars all carry this
        return "tar"
    if looks_like_html(head):
        raise PipelineError(f"{archive_path}: is an HTML page, not an archive "
                            "(a login or error page served instead of the file?)")
    raise PipelineError(f"{archive_path}: not an archive of a supported format ({SUPPORTED})")


def looks_like_html(head):
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html"))


# ------------------------------------------------------------------ members
@contextlib.contextmanager
def tar_entries(archive_path, kind):
    with tarfile.open(archive_path, TAR_MODES[kind]) as tar:
        yield [tar_entry(archive_path, tar, member) for member in tar.getmembers()]


def tar_entry(archive_path, tar, member):
    if not (member.isreg() or member.isdir()):
        what = TAR_TYPE_NAMES.get(member.type, f"a special member (type {member.type!r})")
        refuse(archive_path, member.name, f"it is {what}")
    path = safe_path(archive_path, member.name, member.isdir())
    if member.isdir():
        return Entry(path, True, 0, None)
    return Entry(path, False, member.size, lambda: tar.extractfile(member))


@contextlib.contextmanager
def zip_entries(archive_path, kind):
    with zipfile.ZipFile(archive_path) as archive:
        yield [zip_entry(archive_path, archive, info) for info in archive.infolist()]


def zip_entry(archive_path, archive, info):
    # Zips made on Unix keep the file type in the high bits; 0 means "not recorded".
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if file_type == stat.S_IFLNK else "a special file"
        refuse(archive_path, info.filename, f"it is {what}")
    if info.flag_bits & 0x1:
        refuse(archive_path, info.filename, "it is encrypted")
    path = safe_path(archive_path, info.filename, info.is_dir())
    if info.is_dir():
        return Entry(path, True, 0, None)
    return Entry(path, False, info.file_size, lambda: archive.open(info))


def safe_path(archive_path, name, is_dir):
    """The member's name as a clean relative path, or a refusal if it could escape."""
    if "\\" in name or "\0" in name:
        refuse(archive_path, name, "backslash or NUL in the name")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        refuse(archive_path, name, "absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        refuse(archive_path, name, "'..' in the path")
    if not parts and not is_dir:
        refuse(archive_path, name, "a file with an empty name")
    return "/".join(parts)


def refuse(archive_path, name, reason):
    printable = "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)
    raise PipelineError(f"{archive_path}: refusing member '{printable}': {reason}")


# ------------------------------------------------------------------ writing
class ByteBudget:
    """Counts bytes against the cap and fails as soon as the total passes it."""

    def __init__(self, archive_path, max_bytes):
        self.archive_path, self.max_bytes, self.used = archive_path, max_bytes, 0

    def spend(self, count):
        self.used += count
        if self.used > self.max_bytes:
            raise PipelineError(f"{self.archive_path}: unpacks to more than {self.max_bytes} "
                                "bytes (download.max_extract_bytes)")


def unpack(archive_path, entries, temp_dir, max_bytes):
    """Write checked entries under ``temp_dir``; return the relative paths of the files."""
    declared = ByteBudget(archive_path, max_bytes)
    for entry in entries:
        declared.spend(entry.size)
    written = ByteBudget(archive_path, max_bytes)  # headers can lie: count real bytes too
    files = []
    for entry in entries:
        destination = os.path.join(temp_dir, *entry.path.split("/"))
        if entry.is_dir:
            os.makedirs(destination, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with entry.open() as source, create_file(destination) as out:
            copy_counted(source, out, written)
        files.append(entry.path)
    return list(dict.fromkeys(files))  # a tar may hold a file twice; the last copy wins


def create_file(path):
    """Open a new file with normal permissions (0o644), whatever mode the archive claimed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def copy_counted(source, out, budget):
    while chunk := source.read(CHUNK_BYTES):
        budget.spend(len(chunk))
        out.write(chunk)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"Formats (detected from the content, not the name): {SUPPORTED}.")
    parser.add_argument("--archive", required=True, help="the archive file to unpack")
    parser.add_argument("--output", required=True,
                        help="the folder to create (replaced as a whole on success)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"refuse archives that unpack to more (default {DEFAULT_MAX_BYTES})")
    args = parser.parse_args(argv)
    files = extract(args.archive, args.output, args.max_bytes)
    print(f"unpacked {len(files)} files into {args.output}")


if __name__ == "__main__":
    run_cli(main)
