"""Unpack an untrusted zip or tar archive into a folder, refusing anything unsafe.

Archives from the internet are untrusted: the format comes from the file's first
bytes (never its name), and members are read in one streaming pass, each checked as
its header is read, before any of it is written: no absolute paths, ``..``,
backslashes, links or device files; no path deeper than ``max_depth`` or too long for
the file system; at most ``max_members`` members; a name twice only with the same
contents. The unpacked size is capped twice: by the running total of the sizes the
headers declare (so a compressed bomb is refused at its first header, not after
decompressing it), then by the bytes actually written. A tar must end with its
end-of-archive marker, so one cut at a member boundary is not taken for a smaller
data set. Everything goes to a temporary folder that replaces the target only on
success, so a failure leaves no target folder, no temporary, and nothing outside it.

Entry point:
    python -m scripts.data.archive --archive FILE --output DIR [--max-bytes N] [--max-members N] [--max-depth N]
"""
import argparse
import bz2
import collections
import contextlib
import errno
import gzip
import hashlib
import itertools
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib

from scripts.core import atomic
from scripts.core.errors import SHOWN_CHARS, PipelineError, run_cli, shown

CHUNK_BYTES = 1 << 16
DEFAULT_MAX_BYTES = 10_000_000_000  # as download.max_extract_bytes in config.yaml
DEFAULT_MAX_MEMBERS = 100_000  # as download.max_members
DEFAULT_MAX_DEPTH = 32  # as download.max_depth
MAX_PART_BYTES = 255  # longest file or folder name Linux and macOS file systems take
MAX_PATH_BYTES = 1024  # a member's whole path: with the target's, well below PATH_MAX (4096)
MAX_TRAILER_BYTES = 1 << 24  # after a compressed tar's end marker (padding to a record size)
MAX_HEADER_BYTES = 1 << 20  # one extended tar header (pax, GNU long name), read whole into memory
MAX_EXTENDED_BYTES = 1 << 26  # all extended headers of a tar together
# A pax length or time has at most ~20 digits; Python < 3.11.10 parses pax headers with a
# regex that backtracks quadratically over a long run of digits (CVE-2024-6232).
LONG_DIGITS = re.compile(rb"[0-9]{65}")
SUPPORTED = "zip, tar, tar.gz/.tgz, tar.bz2, tar.xz"
OPENERS = {"tar": open, "tar.gz": gzip.open, "tar.bz2": bz2.open, "tar.xz": lzma.open}
ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
TAR_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}
# What a truncated or corrupt archive raises from the standard library's readers.
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
               zlib.error, lzma.LZMAError, OSError, ValueError, NotImplementedError)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# One member to unpack: its name in the archive, and for files a declared size and an opener.
Entry = collections.namedtuple("Entry", "path is_dir size open")


def extract(archive_path, target_dir, max_bytes, max_members=DEFAULT_MAX_MEMBERS, max_depth=DEFAULT_MAX_DEPTH):
    """Unpack ``archive_path`` into ``target_dir``; return the relative paths of its files."""
    archive_path = os.fspath(archive_path)
    kind = detect_format(archive_path)
    entries_of = zip_entries if kind == "zip" else tar_entries
    try:
        if kind == "zip":
            check_zip_count(archive_path, max_members)
        with atomic.atomic_dir(target_dir) as temp_dir, entries_of(archive_path, kind) as entries:
            return unpack(archive_path, entries, temp_dir, max_bytes, max_members, max_depth)
    except RecursionError:  # tarfile reads a chain of extended headers recursively
        raise PipelineError(f"{archive_path}: cannot unpack this {kind} archive: a chain of thousands of "
                            "extended headers (corrupt or hostile)") from None
    except READ_ERRORS as error:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            raise  # run_cli reports a full disk as such
        if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
            raise PipelineError(f"{archive_path}: a member's path is too long for the file system under "
                                f"{target_dir}") from error
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PipelineError(f"{archive_path}: cannot unpack this {kind} archive, "
                            f"truncated or corrupt? ({clip(reason)})") from error


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
class TarStream:
    """The decompressed tar as tarfile reads it, watched except while a member's data is read.

    tarfile ends quietly at a missing, short or damaged header as at the end marker, so
    the last header block read is kept to tell them apart. tarfile also reads each
    extended header (pax, GNU long name) whole into memory, and some Pythons parse pax
    headers in quadratic time (see LONG_DIGITS): such headers are refused before it sees them.
    """

    def __init__(self, archive_path, stream):
        self.archive_path, self.stream = archive_path, stream
        self.last, self.reading_data, self.extended = b"", False, 0

    @contextlib.contextmanager
    def data_of(self, tar, member):
        """A member's data, read unwatched."""
        self.reading_data = True
        try:
            with tar.extractfile(member) as data:
                yield data
        finally:
            self.reading_data = False

    def read(self, size=-1):
        if self.reading_data:
            return self.stream.read(size)
        if size > tarfile.BLOCKSIZE:  # an extended header's contents
            self.extended += size
            if size > MAX_HEADER_BYTES or self.extended > MAX_EXTENDED_BYTES:
                raise PipelineError(f"{self.archive_path}: a tar extended header of {size} bytes "
                                    f"(at most {MAX_HEADER_BYTES}, {MAX_EXTENDED_BYTES} in all)")
        self.last = self.stream.read(size)
        if size > tarfile.BLOCKSIZE and LONG_DIGITS.search(self.last):
            raise PipelineError(f"{self.archive_path}: a tar extended header holds a run of over 64 digits "
                                "(malformed or hostile)")
        return self.last

    def seek(self, offset, whence=os.SEEK_SET):
        return self.stream.seek(offset, whence)

    def tell(self):
        return self.stream.tell()


@contextlib.contextmanager
def tar_entries(archive_path, kind):
    # Opened here rather than by tarfile.open(path, "r:gz") so that the end can be checked.
    with OPENERS[kind](archive_path, "rb") as raw:
        stream = TarStream(archive_path, raw)
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            yield tar_members(archive_path, kind, tar, stream)


def tar_members(archive_path, kind, tar, stream):
    """The members one by one, each as its header is read (never all headers first)."""
    while (member := tar.next()) is not None:
        tar.members = []  # tarfile keeps every header it has read; we need none again
        yield tar_entry(archive_path, tar, member, stream)
    check_tar_end(archive_path, kind, stream)


def tar_entry(archive_path, tar, member, stream):
    if not (member.isreg() or member.isdir()):
        what = TAR_TYPE_NAMES.get(member.type, f"a special member (type {member.type!r})")
        refuse(archive_path, member.name, f"it is {what}")
    if member.isdir():
        return Entry(member.name, True, 0, None)
    return Entry(member.name, False, member.size, lambda: stream.data_of(tar, member))


def check_tar_end(archive_path, kind, stream):
    """Two zero blocks end a tar; a compressed one is then read to its end, so its checksum is checked."""
    raw = stream.stream  # read on past tarfile, unwatched
    if stream.last != ZERO_BLOCK or raw.read(tarfile.BLOCKSIZE) != ZERO_BLOCK:
        raise PipelineError(f"{archive_path}: the tar has no end-of-archive marker after its last member "
                            "(cut short, or damaged there)")
    if kind == "tar":
        return
    trailer = 0
    while chunk := raw.read(CHUNK_BYTES):
        trailer += len(chunk)
        if trailer > MAX_TRAILER_BYTES:
            raise PipelineError(f"{archive_path}: more than {MAX_TRAILER_BYTES} bytes follow the tar's "
                                "end-of-archive marker")


@contextlib.contextmanager
def zip_entries(archive_path, kind):
    with zipfile.ZipFile(archive_path) as archive:
        check_zip_overlap(archive_path, archive.infolist())
        yield (zip_entry(archive_path, archive, info) for info in archive.infolist())


def check_zip_overlap(archive_path, infos):
    """Refuse members whose data overlap: one compressed stream unpacked many times is a zip bomb.

    (Python's zipfile checks this itself only from 3.12 on.) A local header takes at least
    30 bytes, so each member's data ends no sooner than its offset + 30 + compressed size.
    """
    starts = sorted((info.header_offset, info.compress_size, info.filename) for info in infos)
    for (offset, size, name), (next_offset, _, _) in itertools.pairwise(starts):
        if offset + 30 + size > next_offset:
            refuse(archive_path, name, "its data overlaps the next member's (a zip bomb)")


def check_zip_count(archive_path, max_members):
    """Refuse by the count in the end record, before zipfile loads the whole directory."""
    with open(archive_path, "rb") as handle:
        end = zipfile._EndRecData(handle)  # zipfile's own reader of that record; None if absent
    if end and end[zipfile._ECD_ENTRIES_TOTAL] > max_members:
        too_many(archive_path, max_members)


def zip_entry(archive_path, archive, info):
    # Zips made on Unix keep the file type in the high bits; 0 means "not recorded".
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if file_type == stat.S_IFLNK else "a special file"
        refuse(archive_path, info.filename, f"it is {what}")
    if info.flag_bits & 0x1:
        refuse(archive_path, info.filename, "it is encrypted")
    if info.is_dir():
        return Entry(info.filename, True, 0, None)
    return Entry(info.filename, False, info.file_size, lambda: archive.open(info))


def safe_path(archive_path, name, is_dir, max_depth=DEFAULT_MAX_DEPTH):
    """The member's name as a clean relative path, or a refusal if it could escape or not fit."""
    if "\\" in name or "\0" in name:
        refuse(archive_path, name, "backslash or NUL in the name")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        refuse(archive_path, name, "absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        refuse(archive_path, name, "'..' in the path")
    if not parts and not is_dir:
        refuse(archive_path, name, "a file with an empty name")
    if len(parts) > max_depth:
        refuse(archive_path, name, f"{len(parts)} levels deep, more than {max_depth} (download.max_depth)")
    longest = max((byte_length(part) for part in parts), default=0)
    if longest > MAX_PART_BYTES:
        refuse(archive_path, name, f"a name in its path is {longest} bytes long, more than {MAX_PART_BYTES}")
    path = "/".join(parts)
    if byte_length(path) > MAX_PATH_BYTES:
        refuse(archive_path, name, f"its path is {byte_length(path)} bytes long, more than {MAX_PATH_BYTES}")
    return path


def byte_length(text):
    # surrogatepass: tarfile keeps undecodable bytes of a name as surrogates.
    return len(text.encode("utf-8", "surrogatepass"))


def refuse(archive_path, name, reason):
    raise PipelineError(f"{archive_path}: refusing member {shown(name)}: {reason}")


def too_many(archive_path, max_members):
    raise PipelineError(f"{archive_path}: holds more than {max_members} members (download.max_members)")


def clip(text):
    return text if len(text) <= 2 * SHOWN_CHARS else text[:2 * SHOWN_CHARS] + "..."


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


class Tree:
    """What has been written under ``root`` so far, so a clash is refused rather than resolved."""

    def __init__(self, archive_path, root):
        self.archive_path, self.root = archive_path, root
        self.folders = {""}
        self.files = {}  # relative path -> sha256 of the contents written

    def local(self, path):
        return os.path.join(self.root, *path.split("/"))

    def add_folder(self, path, name):
        """Create ``path`` and its missing parents, top-down (os.makedirs recurses upwards)."""
        parts = path.split("/") if path else []
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder in self.folders:
                continue
            if folder in self.files:
                refuse(self.archive_path, name, f"{shown(folder)} is a file earlier in the archive")
            os.mkdir(self.local(folder))
            self.folders.add(folder)

    def add_file(self, path, entry, budget):
        self.add_folder(path.rpartition("/")[0], entry.path)
        if path in self.folders:
            refuse(self.archive_path, entry.path, "a folder of this name is earlier in the archive")
        with entry.open() as source:
            if path not in self.files:
                with create_file(self.local(path)) as out:
                    self.files[path] = copy_counted(source, out, budget)
            elif copy_counted(source, None, budget) != self.files[path]:
                refuse(self.archive_path, entry.path, "it is in the archive twice, with different contents")


def unpack(archive_path, entries, temp_dir, max_bytes, max_members=DEFAULT_MAX_MEMBERS,
           max_depth=DEFAULT_MAX_DEPTH):
    """Check and write each entry under ``temp_dir`` as it comes; return the relative paths of the files."""
    tree = Tree(archive_path, temp_dir)
    declared = ByteBudget(archive_path, max_bytes)
    written = ByteBudget(archive_path, max_bytes)  # headers can lie: count real bytes too
    for count, entry in enumerate(entries, start=1):
        if count > max_members:
            too_many(archive_path, max_members)
        path = safe_path(archive_path, entry.path, entry.is_dir, max_depth)
        declared.spend(entry.size)
        if entry.is_dir:
            tree.add_folder(path, entry.path)
        else:
            tree.add_file(path, entry, written)
    return list(tree.files)  # a name the archive holds twice (same contents) is one file


def create_file(path):
    """Create a new file with normal permissions (0o644), whatever mode the archive claimed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def copy_counted(source, out, budget):
    """Copy ``source`` to ``out`` (None: only read it) against the budget; return its sha256."""
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK_BYTES):
        budget.spend(len(chunk))
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"Formats (detected from the content, not the name): {SUPPORTED}.")
    parser.add_argument("--archive", required=True, help="the archive file to unpack")
    parser.add_argument("--output", required=True,
                        help="the folder to create (replaced as a whole on success)")
    parser.add_argument("--max-bytes", type=int, required=True,
                        help="refuse archives that unpack to more (download.max_extract_bytes)")
    parser.add_argument("--max-members", type=int, required=True,
                        help="refuse archives with more members (download.max_members)")
    parser.add_argument("--max-depth", type=int, required=True,
                        help="refuse paths with more levels (download.max_depth)")
    args = parser.parse_args(argv)
    files = extract(args.archive, args.output, args.max_bytes, args.max_members, args.max_depth)
    print(f"unpacked {len(files)} files into {args.output}")


if __name__ == "__main__":
    run_cli(main)
