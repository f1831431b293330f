"""Sort a raw tree of images into classes, checking every file on the way.

Each file is fully decoded. Files that cannot be used go to rejects.tsv with the reason;
byte-identical copies are kept once and listed in duplicates.tsv. A JPEG that is already
plain RGB, named .jpg or .jpeg, is used where it is: its index row points at the source
file, so it is not stored twice. Any other image is converted to an RGB PNG (EXIF
orientation applied, alpha laid on white, 16-bit scaled to 8-bit, first frame only)
written to OUT/<class>/ (a JPEG with another name is copied there as .jpg). index.tsv
lists the kept images with the sha256 of their source bytes, which the split uses as the
image's identity; its paths are as reachable from the working folder as --raw and --out.

The raw tree is untrusted (an archive, or a folder read in place). Only regular files
inside it are read: links that leave it, FIFOs, sockets and devices are rejected without
being opened, and at most --max-image-bytes are read of a file. Class names are
normalised to Unicode NFC; names with control characters, and two names that are the
same after normalisation or differ only in case (one folder on macOS and Windows), are
one-line errors.

Entry point:
    python -m scripts.data.structure --raw RAW --out OUT --index index.tsv --rejects rejects.tsv
        --duplicates duplicates.tsv --summary summary.json --layout folders
        [--filename-regex REGEX] [--class-map JSON] [--threads N] [--max-image-bytes N]
        [--rejects-copy LOG.tsv] [--duplicates-copy LOG.tsv]
"""
import argparse
import collections
import dataclasses
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
import stat
import unicodedata
import warnings

from PIL import Image, UnidentifiedImageError

from scripts.core import atomic
from scripts.core.decode import to_rgb
from scripts.core.errors import SHOWN_CHARS, PipelineError, run_cli, shown

INDEX_HEADER = ("path", "label", "sha256", "width", "height", "source")
REJECTS_HEADER = ("source", "reason")
DUPLICATES_HEADER = ("source", "kept", "sha256", "note")

# Reject reasons. Details, if any, follow in parentheses; the summary counts by reason.
UNREADABLE = "cannot read file"
UNREADABLE_FOLDER = "cannot read folder"
NOT_REGULAR = "not a regular file"
OUTSIDE_LINK = "link to a place outside the source folder"
TOO_LARGE = "larger than dataset.max_image_bytes"
BAD_FILE_NAME = "path is not valid UTF-8"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
CORRUPT = "truncated or corrupt image"
BOMB = "decompression bomb (over Pillow's MAX_IMAGE_PIXELS)"
UNCONVERTIBLE = "cannot convert to RGB"
NO_CLASS_FOLDER = "not inside a class folder"
NO_NAME_MATCH = "file name does not match dataset.filename_regex"

LAYOUTS = ("folders", "filename")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
EXIF_ORIENTATION = 0x0112
CHUNKSIZE = 16
UNSAFE_FORMATS = ("EPS",)  # Pillow decodes EPS by running Ghostscript on the file
# Formats Pillow only recognises (no decoder without a plugin): their files (.h5, .grib, ...) are no images here.
STUB_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF"})
DEFAULT_MAX_IMAGE_BYTES = 100_000_000  # as dataset.max_image_bytes in config.yaml
FILE_TYPES = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFDIR: "a link to a folder, not followed"}
# Unicode categories a class name may not hold: controls (newline, tab, ...), undecodable
# bytes (surrogates), and line/paragraph separators, which split lines as a newline does.
BAD_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")
# Bidirectional overrides and isolates make a name show other than it is.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# ---------------------------------------------------------------- finding files and classes

def is_skipped(name):
    """Hidden files and folders, and macOS's resource-fork folder in zip archives."""
    return name.startswith(".") or name == "__MACOSX"


def source_order(relative_path):
    """Sort key: folder by folder, as a tree is walked."""
    return relative_path.split(os.sep)


def list_sources(raw_dir):
    """Relative paths of everything below ``raw_dir`` but folders, in sorted order, and
    (relative path, reason) of the folders that could not be read.

    Walked with a stack, not recursion (os.walk recurses): a tree may be deeper than
    Python's stack. Links are listed like files, never followed into.
    """
    found, unreadable = [], []
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            with os.scandir(os.path.join(raw_dir, relative)) as entries:
                for entry in entries:
                    if is_skipped(entry.name):
                        continue
                    path = os.path.join(relative, entry.name)
                    (stack if entry.is_dir(follow_symlinks=False) else found).append(path)
        except OSError as error:  # e.g. no permission: one folder, not the whole run
            unreadable.append((relative or os.curdir, f"{UNREADABLE_FOLDER} ({short(error)})"))
    return sorted(found, key=source_order), unreadable


def file_problem(root, path):
    """Why ``path`` must not be opened as an image, or None for a regular file inside ``root``.

    A link may lead anywhere (/dev/zero, /etc/passwd, another data set), and opening a
    FIFO or a device can block or never end, so both are judged by lstat/stat alone.
    ``root`` is the real path of the source folder.
    """
    if has_undecodable(path):
        return BAD_FILE_NAME  # no UTF-8 table could hold its name
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            if not is_inside(os.path.realpath(path), root):
                return OUTSIDE_LINK
            info = os.stat(path)
    except OSError as error:  # a broken link, a loop, no permission
        return f"{UNREADABLE} ({short(error)})"
    if not stat.S_ISREG(info.st_mode):
        return f"{NOT_REGULAR} ({FILE_TYPES.get(stat.S_IFMT(info.st_mode), 'a special file')})"
    return None


def is_inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def has_undecodable(text):
    """Python keeps bytes of a file name that are not UTF-8 as lone surrogates."""
    return any(0xDC80 <= ord(char) <= 0xDCFF for char in text)


def table_text(path):
    """A path as text any table can hold: undecodable bytes written as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def compile_regex(pattern, key):
    try:
        return re.compile(pattern)
    except re.error as error:
        raise PipelineError(f"config key {key}: {pattern!r} is not a valid regex ({error})") from None


class Labeller:
    """The class of a file from its place or name, normalised, then renamed by the class map.

    Every name met is remembered, so that two names that are one after normalisation
    (NFC), or after case folding, are refused instead of becoming two classes.
    """

    def __init__(self, layout, filename_regex=None, class_map=None):
        if layout not in LAYOUTS:
            raise PipelineError(f"config key dataset.layout: {layout!r} is not one of: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.filename_pattern = None
        if layout == "filename":
            if not filename_regex:
                raise PipelineError("config key dataset.filename_regex: required when dataset.layout is 'filename'")
            self.filename_pattern = compile_regex(filename_regex, "dataset.filename_regex")
            if self.filename_pattern.groups == 0:
                raise PipelineError(f"config key dataset.filename_regex: {filename_regex!r} has no capturing group "
                                    "for the class")
        self.class_map = [(compile_regex(pattern, "dataset.class_map"), check_class_name(name))
                          for pattern, name in (class_map or {}).items()]
        self.found = {}  # NFC name -> the name as found
        self.final = {}  # casefolded final name -> final name

    def original_label(self, relative_path):
        """The class name before mapping, or None and the reason there is none."""
        folder, name = os.path.split(relative_path)
        if self.layout == "folders":
            return (os.path.basename(folder), None) if folder else (None, NO_CLASS_FOLDER)
        match = self.filename_pattern.search(name)
        if match is None:
            return None, NO_NAME_MATCH
        group = "label" if "label" in self.filename_pattern.groupindex else 1
        label = match.group(group)
        return (label, None) if label else (None, NO_NAME_MATCH)

    def label(self, relative_path):
        """The final class name, or None and the reason the file has none."""
        label, reason = self.original_label(relative_path)
        if label is None:
            return None, reason
        label = self.normalised(label, relative_path)
        for pattern, new_name in self.class_map:
            if pattern.fullmatch(label):
                label = new_name
                break
        return self.case_checked(label), None

    def normalised(self, label, relative_path):
        problem = name_problem(label)
        if problem:
            raise PipelineError(f"class name {shown(label)} of {shown(relative_path)} {problem}; rename it")
        nfc = unicodedata.normalize("NFC", label)
        found = self.found.setdefault(nfc, label)
        if found != label:
            raise PipelineError(f"class names {clip(ascii(found))} and {clip(ascii(label))} (at "
                                f"{shown(relative_path)}) are the same after Unicode normalisation; rename one")
        return nfc

    def case_checked(self, label):
        final = self.final.setdefault(label.casefold(), label)
        if final != label:
            raise PipelineError(f"class names {shown(final)} and {shown(label)} differ only in case, and would be "
                                "one folder on macOS and Windows; rename one, or merge them with dataset.class_map")
        return label


def name_problem(name):
    """What makes ``name`` unfit as a class name, or None."""
    if name in ("", ".", "..") or "/" in name or os.sep in name:
        return "cannot be a folder name"
    if has_undecodable(name):
        return "is not valid UTF-8"
    for char in name:
        if unicodedata.category(char) in BAD_CATEGORIES or char in BIDI_CONTROLS:
            return f"holds a control character (U+{ord(char):04X})"
    return None


def check_class_name(name):
    """A class name becomes a folder name and a label, so it must be fit for both."""
    if not isinstance(name, str) or name_problem(name):
        raise PipelineError(f"config key dataset.class_map: {shown(str(name))} cannot be a class name "
                            f"({name_problem(str(name)) or 'not text'})")
    return unicodedata.normalize("NFC", name)


def clip(text):
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


# ---------------------------------------------------------------- decoding one file

@dataclasses.dataclass
class Decoded:
    """What one source file becomes: used in place, bytes to write, or the reason it was rejected."""
    sha256: str
    reason: str | None = None
    data: bytes = b""  # to write under OUT, unless in_place
    in_place: bool = False
    converted: bool = False
    html: bool = False  # a web page (a failed download), not an image
    width: int = 0
    height: int = 0


@functools.cache
def safe_formats():
    """Every format Pillow reads but those it reads by running another program."""
    Image.init()
    return tuple(name for name in Image.OPEN if name not in UNSAFE_FORMATS)


def open_fully(source):
    """Decode the first frame of ``source`` bytes: (image, None) or (None, reason)."""
    try:
        with warnings.catch_warnings():
            # Over MAX_IMAGE_PIXELS Pillow only warns; over twice that it raises.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source), formats=safe_formats())
            image.load()
        return image, None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None, BOMB
    except UnidentifiedImageError:
        return None, NOT_AN_IMAGE
    except Exception as error:  # noqa: BLE001 - a damaged file can make a decoder fail in any way
        return None, f"{CORRUPT} ({short(error)})"


def short(error):
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]


def is_plain_jpeg(image):
    """An 8-bit RGB JPEG shown as stored: it can be copied unchanged."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return image.format == "JPEG" and image.mode == "RGB" and orientation == 1


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def read_regular(path, max_bytes):
    """(bytes, None) of a regular file of at most ``max_bytes``, else (None, reason).

    Checked again on the open file: it may have been replaced since it was listed.
    O_NONBLOCK, so that opening a FIFO put there meanwhile does not wait for a writer.
    """
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None, f"{UNREADABLE} ({NOT_REGULAR})"
            if info.st_size > max_bytes:
                return None, f"{TOO_LARGE} ({info.st_size} > {max_bytes} bytes)"
            data = handle.read(info.st_size + 1)  # one byte more tells a file that grew
    except OSError as error:  # e.g. no permission: one file, not the whole run
        return None, f"{UNREADABLE} ({short(error)})"
    if len(data) > info.st_size:
        return None, f"{UNREADABLE} (it changed while being read)"
    return data, None


def decode(path, max_bytes=DEFAULT_MAX_IMAGE_BYTES):
    """Read, hash and check one file (runs in a worker process when threads > 1)."""
    source, reason = read_regular(path, max_bytes)
    if source is None:
        return Decoded("", reason)
    sha256 = hashlib.sha256(source).hexdigest()
    if not source:
        return Decoded(sha256, EMPTY)
    image, reason = open_fully(source)
    if image is None:
        html = reason == NOT_AN_IMAGE and looks_like_html(source)
        return Decoded(sha256, f"{reason} (an HTML page)" if html else reason, html=html)
    try:
        if is_plain_jpeg(image):
            if path.lower().endswith(JPEG_EXTENSIONS):
                return Decoded(sha256, in_place=True, width=image.width, height=image.height)
            return Decoded(sha256, data=source, width=image.width, height=image.height)
        rgb = to_rgb(image)
        return Decoded(sha256, data=png_bytes(rgb), converted=True, width=rgb.width, height=rgb.height)
    except Exception as error:  # noqa: BLE001 - odd modes or broken EXIF: reject the file, not the run
        return Decoded(sha256, f"{UNCONVERTIBLE} ({short(error)})")


def _set_max_image_pixels(limit):
    # A worker started by "spawn" would not see a limit the parent changed.
    Image.MAX_IMAGE_PIXELS = limit


def decode_all(paths, threads, max_bytes=DEFAULT_MAX_IMAGE_BYTES):
    """``decode`` of each path, in order."""
    decode_one = functools.partial(decode, max_bytes=max_bytes)
    if threads <= 1:
        yield from map(decode_one, paths)
        return
    with multiprocessing.Pool(threads, initializer=_set_max_image_pixels,
                              initargs=(Image.MAX_IMAGE_PIXELS,)) as pool:
        yield from pool.imap(decode_one, paths, chunksize=CHUNKSIZE)


# ---------------------------------------------------------------- collecting the results

def meant_as_image(relative_path, decoded):
    """Whether a rejected file was meant as one of its class's images, so that losing it counts.

    Every reason but "not an image" is about an image file (empty, truncated, too large, a
    FIFO named .jpg, ...). A file that is not an image counts when its name says image
    (``x.jpg`` holding an HTML page: a failed scrape) or it is an HTML page whatever its
    name; ``README.txt`` or ``labels.csv`` beside the images does not, and a folder of only
    such files is no class.
    """
    return decoded.reason != NOT_AN_IMAGE or decoded.html or has_image_extension(relative_path)


@functools.cache
def image_extensions():
    """The file extensions of the formats Pillow reads here (.jpg, .png, .tif, .webp, ...; not .pdf or .eps)."""
    formats = set(safe_formats()) - STUB_FORMATS
    return frozenset(extension for extension, name in Image.registered_extensions().items() if name in formats)


def has_image_extension(path):
    return os.path.splitext(path)[1].lower() in image_extensions()


def looks_like_html(source):
    text = source[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")) and b"html" in text

class Collection:
    """Kept images, rejects and duplicates, decided file by file in source order."""

    def __init__(self, raw_dir, out_dir, temp_out):
        self.raw_dir, self.out_dir, self.temp_out = raw_dir, out_dir, temp_out
        self.index, self.rejects, self.duplicates = [], [], []
        self.kept = {}  # sha256 -> (source, label) of the copy that was kept
        self.used_names = collections.defaultdict(set)
        # Files that look like a class's images; a folder of only non-images is no class.
        self.candidates = collections.Counter()
        self.candidate_reasons = collections.defaultdict(collections.Counter)  # label -> reason -> rejected files
        self.first_place = {}  # label -> the folder of its first rejected file, for the error line
        self.duplicate_counts = collections.Counter()

    def source(self, relative_path):
        return os.path.join(self.raw_dir, relative_path)

    def reject(self, relative_path, reason, label=None, meant_as_image=True):
        self.rejects.append((relative_path, reason))
        if label is not None and meant_as_image:
            self.candidates[label] += 1
            self.candidate_reasons[label][reason.split(" (")[0]] += 1
            self.first_place.setdefault(label, os.path.dirname(self.source(relative_path)))

    def add(self, relative_path, label, decoded):
        if decoded.reason:
            self.reject(relative_path, decoded.reason, label, meant_as_image(relative_path, decoded))
            return
        self.candidates[label] += 1
        source = self.source(relative_path)
        if decoded.sha256 in self.kept:
            self.add_duplicate(source, label, decoded.sha256)
            return
        self.kept[decoded.sha256] = (source, label)
        path = source if decoded.in_place else self.write(label, os.path.basename(relative_path), decoded)
        self.index.append((path, label, decoded.sha256, decoded.width, decoded.height, source))

    def write(self, label, file_name, decoded):
        """Write a converted (or renamed) image under OUT/<label>/; return its path there."""
        name = self.output_name(label, file_name, decoded)
        os.makedirs(os.path.join(self.temp_out, label), exist_ok=True)
        with open(os.path.join(self.temp_out, label, name), "wb") as handle:
            handle.write(decoded.data)
        return os.path.join(self.out_dir, label, name)

    def add_duplicate(self, source, label, sha256):
        kept_source, kept_label = self.kept[sha256]
        note = "same label" if label == kept_label else \
            f"conflicting labels {kept_label}/{label}; kept as {kept_label}"
        self.duplicates.append((source, kept_source, sha256, note))
        self.duplicate_counts[label] += 1

    def output_name(self, label, file_name, decoded):
        """The file name in the class folder: the source's, unless it is taken."""
        stem, extension = os.path.splitext(file_name)
        if decoded.converted:
            extension = ".png"
        elif extension.lower() not in JPEG_EXTENSIONS:
            extension = ".jpg"  # a copied JPEG keeps a name that says JPEG
        used = self.used_names[label]
        # casefold: "A.jpg" and "a.jpg" are one file on macOS and Windows.
        for name in (stem + extension, f"{stem}-{decoded.sha256[:8]}{extension}",
                     f"{stem}-{decoded.sha256}{extension}"):
            if name.casefold() not in used:
                break
        used.add(name.casefold())
        return name

    def reject_rows(self):
        """Rejects in source order (layout rejects were found before the decoding ones)."""
        return [(table_text(self.source(path)), reason) for path, reason in
                sorted(self.rejects, key=lambda row: source_order(row[0]))]

    def class_counts(self):
        return dict(sorted(collections.Counter(row[1] for row in self.index).items()))


def check_classes(collection, raw_dir, rejects_path, duplicates_path):
    """Every class keeps an image, and there are at least two classes.

    The paths named must outlive a failed job (Snakemake deletes its outputs): copies in the log folder.
    """
    counts = collection.class_counts()
    for label, candidates in sorted(collection.candidates.items()):
        if label not in counts:
            duplicates = collection.duplicate_counts[label]
            rejected = candidates - duplicates
            reasons = "; ".join(f"{reason}: {count}" for reason, count in
                                collection.candidate_reasons[label].most_common())
            what = f"all {rejected} of its files were rejected ({reasons}; see {rejects_path})" if not duplicates \
                else f"{rejected} of its {candidates} files were rejected" + \
                (f" ({reasons}; see {rejects_path})" if rejected else "") + \
                f", {duplicates} are copies of other classes' files (see {duplicates_path})"
            place = collection.first_place.get(label)
            where = f" (folder {shown(table_text(place))})" if place else ""
            raise PipelineError(f"class {shown(label)} has no usable image: {what}{where}")
    if len(counts) < 2:
        noun = "class" if len(counts) == 1 else "classes"
        rejected = f"; {len(collection.rejects)} files rejected (see {rejects_path})" if collection.rejects else ""
        raise PipelineError(f"found {len(counts)} {noun} ({clip(', '.join(counts))}) in {raw_dir}; "
                            f"need at least two{rejected}")


def summary(collection):
    reasons = collections.Counter(reason.split(" (")[0] for _, reason in collection.rejects)
    return {
        "classes": collection.class_counts(),
        "images": len(collection.index),
        "rejects": len(collection.rejects),
        "rejects_by_reason": dict(sorted(reasons.items())),
        "duplicates": len(collection.duplicates),
    }


def check_folders(raw_dir, out_dir, threads, max_image_bytes):
    if not os.path.isdir(raw_dir):
        raise PipelineError(f"{raw_dir}: the raw data folder does not exist")
    raw, out = os.path.realpath(raw_dir), os.path.realpath(out_dir)
    # The output folder is replaced as a whole, so it must not hold (or sit in) the raw data.
    if raw == out or raw.startswith(out + os.sep) or out.startswith(raw + os.sep):
        raise PipelineError(f"--out {out_dir} and --raw {raw_dir} overlap; they must be separate folders")
    if threads < 1:
        raise PipelineError(f"--threads {threads}: must be at least 1")
    if max_image_bytes < 1:
        raise PipelineError(f"config key dataset.max_image_bytes: {max_image_bytes} must be at least 1")


def collect(raw_dir, out_dir, temp_out, labeller, threads, max_image_bytes=DEFAULT_MAX_IMAGE_BYTES):
    """Label, check, decode and sort every file of ``raw_dir``; converted images go to ``temp_out``."""
    collection = Collection(raw_dir, out_dir, temp_out)
    root = os.path.realpath(raw_dir)
    files, unreadable = list_sources(raw_dir)
    collection.rejects += unreadable
    labelled = []
    for relative_path in files:
        label, reason = labeller.label(relative_path)
        if label is None:
            collection.reject(relative_path, reason)
        elif problem := file_problem(root, collection.source(relative_path)):
            collection.reject(relative_path, problem, label)
        else:
            labelled.append((relative_path, label))
    sources = [collection.source(relative_path) for relative_path, _ in labelled]
    for (relative_path, label), decoded in zip(labelled, decode_all(sources, threads, max_image_bytes)):
        collection.add(relative_path, label, decoded)
    return collection


def structure(raw_dir, out_dir, index_path, rejects_path, duplicates_path, summary_path,
              layout, filename_regex=None, class_map=None, threads=1, max_image_bytes=DEFAULT_MAX_IMAGE_BYTES,
              rejects_copy=None, duplicates_copy=None):
    """Sort ``raw_dir`` into classes, converting into ``out_dir/<class>/``; write the tables; return the summary.

    ``rejects_copy``/``duplicates_copy``: copies of those tables that outlive a failed job
    (Snakemake deletes its outputs), named by the errors instead.
    """
    labeller = Labeller(layout, filename_regex, class_map)
    check_folders(raw_dir, out_dir, threads, max_image_bytes)
    with atomic.atomic_dir(out_dir) as temp_out:
        collection = collect(raw_dir, out_dir, temp_out, labeller, threads, max_image_bytes)
        # Written before the checks, so that an error can point at them.
        for path in (rejects_path, rejects_copy):
            if path:
                atomic.write_table(path, REJECTS_HEADER, collection.reject_rows())
        for path in (duplicates_path, duplicates_copy):
            if path:
                atomic.write_table(path, DUPLICATES_HEADER, collection.duplicates)
        check_classes(collection, raw_dir, rejects_copy or rejects_path, duplicates_copy or duplicates_path)
    atomic.write_table(index_path, INDEX_HEADER, collection.index)
    result = summary(collection)
    atomic.write_json(summary_path, result)
    return result


def parse_class_map(text):
    """The --class-map JSON object (regex -> new class name)."""
    try:
        class_map = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise PipelineError(f"config key dataset.class_map: not valid JSON ({error})") from None
    if not isinstance(class_map, dict):
        raise PipelineError("config key dataset.class_map: must be a mapping of regex to class name")
    return class_map


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True, help="folder of raw images (walked recursively)")
    parser.add_argument("--out", required=True, help="output folder for converted images, one subfolder per "
                                                     "class (replaced)")
    parser.add_argument("--index", required=True, help="index.tsv to write: path, label, sha256, width, "
                                                       "height, source")
    parser.add_argument("--rejects", required=True, help="rejects.tsv to write: source, reason")
    parser.add_argument("--duplicates", required=True, help="duplicates.tsv to write: source, kept, sha256, note")
    parser.add_argument("--summary", required=True, help="summary.json to write")
    parser.add_argument("--layout", choices=LAYOUTS, required=True,
                        help="folders: class = folder holding the file; filename: class from --filename-regex")
    parser.add_argument("--filename-regex", default=None,
                        help="with --layout filename: regex searched in the file name; its group 'label', "
                             "else its first group, is the class")
    parser.add_argument("--class-map", default="{}",
                        help='JSON object of regex -> new class name, e.g. \'{"Early|Pre|Pro": "ALL"}\'; '
                             "first full match wins")
    parser.add_argument("--threads", type=int, required=True, help="decoding processes")
    parser.add_argument("--max-image-bytes", type=int, required=True,
                        help="reject larger files unread (dataset.max_image_bytes)")
    parser.add_argument("--rejects-copy", default=None,
                        help="a copy of rejects.tsv that outlives a failed job (e.g. in the log folder)")
    parser.add_argument("--duplicates-copy", default=None, help="the same for duplicates.tsv")
    args = parser.parse_args(argv)
    result = structure(args.raw, args.out, args.index, args.rejects, args.duplicates, args.summary,
                       args.layout, args.filename_regex, parse_class_map(args.class_map), args.threads,
                       args.max_image_bytes, args.rejects_copy, args.duplicates_copy)
    print(f"{result['images']} images in {len(result['classes'])} classes, "
          f"{result['rejects']} rejected, {result['duplicates']} duplicates -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
