"""Sort a raw tree of images into one folder per class, checking every file on the way.

Each file is fully decoded. Files that cannot be used go to rejects.tsv with the reason;
byte-identical copies are kept once and listed in duplicates.tsv. A JPEG that is already
plain RGB is copied byte for byte; any other image is converted to an RGB PNG (EXIF
orientation applied, alpha laid on white, 16-bit scaled to 8-bit, first frame only).
index.tsv lists the kept images with the sha256 of their source bytes, which the split
uses as the image's identity.

Entry point:
    python -m scripts.data.structure --raw RAW --out OUT --index index.tsv --rejects rejects.tsv
        --duplicates duplicates.tsv --summary summary.json --layout folders
        [--filename-regex REGEX] [--class-map JSON] [--threads N]
"""
import argparse
import collections
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
import warnings

from PIL import Image, UnidentifiedImageError

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import to_rgb

INDEX_HEADER = ("path", "label", "sha256", "width", "height", "source")
REJECTS_HEADER = ("source", "reason")
DUPLICATES_HEADER = ("source", "kept", "sha256", "note")

# Reject reasons. Details, if any, follow in parentheses; the summary counts by reason.
UNREADABLE = "cannot read file"
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


# ---------------------------------------------------------------- finding files and classes

def is_skipped(name):
    """Hidden files and folders, and macOS's resource-fork folder in zip archives."""
    return name.startswith(".") or name == "__MACOSX"


def source_order(relative_path):
    """Sort key: folder by folder, as a tree is walked."""
    return relative_path.split(os.sep)


def list_sources(raw_dir):
    """Paths relative to ``raw_dir`` of the files below it, in sorted order."""
    found = []
    for folder, subfolders, files in os.walk(raw_dir):
        subfolders[:] = [name for name in subfolders if not is_skipped(name)]
        relative = os.path.relpath(folder, raw_dir)
        found += [os.path.normpath(os.path.join(relative, name)) for name in files if not is_skipped(name)]
    return sorted(found, key=source_order)


def compile_regex(pattern, key):
    try:
        return re.compile(pattern)
    except re.error as error:
        raise PipelineError(f"config key {key}: {pattern!r} is not a valid regex ({error})") from None


class Labeller:
    """The class of a file from its place or name, then renamed by the class map."""

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
        for pattern, new_name in self.class_map:
            if pattern.fullmatch(label):
                return new_name, None
        return label, None


def check_class_name(name):
    """A class name becomes a folder name, so it must be one."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name:
        raise PipelineError(f"config key dataset.class_map: {name!r} cannot be a class (folder) name")
    return name


# ---------------------------------------------------------------- decoding one file

@dataclasses.dataclass
class Decoded:
    """What one source file becomes: bytes to write, or the reason it was rejected."""
    sha256: str
    reason: str | None = None
    data: bytes = b""
    converted: bool = False
    width: int = 0
    height: int = 0


def open_fully(source):
    """Decode the first frame of ``source`` bytes: (image, None) or (None, reason)."""
    try:
        with warnings.catch_warnings():
            # Over MAX_IMAGE_PIXELS Pillow only warns; over twice that it raises.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source))
            image.load()
        return image, None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None, BOMB
    except UnidentifiedImageError:
        return None, NOT_AN_IMAGE
    except Exception as error:  # a damaged file can make a decoder fail in any way
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


def decode(path):
    """Read, hash and check one file (runs in a worker process when threads > 1)."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as error:  # e.g. no permission: one file, not the whole run
        return Decoded("", f"{UNREADABLE} ({short(error)})")
    sha256 = hashlib.sha256(source).hexdigest()
    if not source:
        return Decoded(sha256, EMPTY)
    image, reason = open_fully(source)
    if image is None:
        return Decoded(sha256, reason)
    try:
        if is_plain_jpeg(image):
            return Decoded(sha256, data=source, width=image.width, height=image.height)
        rgb = to_rgb(image)
        return Decoded(sha256, data=png_bytes(rgb), converted=True, width=rgb.width, height=rgb.height)
    except Exception as error:  # odd modes or broken EXIF: reject the file, not the run
        return Decoded(sha256, f"{UNCONVERTIBLE} ({short(error)})")


def _set_max_image_pixels(limit):
    # A worker started by "spawn" would not see a limit the parent changed.
    Image.MAX_IMAGE_PIXELS = limit


def decode_all(paths, threads):
    """``decode`` of each path, in order."""
    if threads <= 1:
        yield from map(decode, paths)
        return
    with multiprocessing.Pool(threads, initializer=_set_max_image_pixels,
                              initargs=(Image.MAX_IMAGE_PIXELS,)) as pool:
        yield from pool.imap(decode, paths, chunksize=CHUNKSIZE)


# ---------------------------------------------------------------- collecting the results

class Collection:
    """Kept images, rejects and duplicates, decided file by file in source order."""

    def __init__(self, raw_dir, out_dir, temp_out):
        self.raw_dir, self.out_dir, self.temp_out = raw_dir, out_dir, temp_out
        self.index, self.rejects, self.duplicates = [], [], []
        self.kept = {}  # sha256 -> (source, label) of the copy that was kept
        self.used_names = collections.defaultdict(set)
        # Files that look like a class's images; a folder of only non-images is no class.
        self.candidates = collections.Counter()
        self.duplicate_counts = collections.Counter()

    def source(self, relative_path):
        return os.path.join(self.raw_dir, relative_path)

    def reject(self, relative_path, reason, label=None):
        self.rejects.append((relative_path, reason))
        if label is not None and reason != NOT_AN_IMAGE:
            self.candidates[label] += 1

    def add(self, relative_path, label, decoded):
        if decoded.reason:
            self.reject(relative_path, decoded.reason, label)
            return
        self.candidates[label] += 1
        source = self.source(relative_path)
        if decoded.sha256 in self.kept:
            self.add_duplicate(source, label, decoded.sha256)
            return
        self.kept[decoded.sha256] = (source, label)
        name = self.output_name(label, os.path.basename(relative_path), decoded)
        os.makedirs(os.path.join(self.temp_out, label), exist_ok=True)
        with open(os.path.join(self.temp_out, label, name), "wb") as handle:
            handle.write(decoded.data)
        self.index.append((os.path.join(self.out_dir, label, name), label, decoded.sha256,
                           decoded.width, decoded.height, source))

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
        return [(self.source(path), reason) for path, reason in
                sorted(self.rejects, key=lambda row: source_order(row[0]))]

    def class_counts(self):
        return dict(sorted(collections.Counter(row[1] for row in self.index).items()))


def check_classes(collection, raw_dir, rejects_path, duplicates_path):
    """Every class keeps an image, and there are at least two classes."""
    counts = collection.class_counts()
    for label, candidates in sorted(collection.candidates.items()):
        if label not in counts:
            duplicates = collection.duplicate_counts[label]
            also = f", {duplicates} copies of other classes' files (see {duplicates_path})" if duplicates else ""
            raise PipelineError(f"class {label!r} has no usable image: {candidates - duplicates} of its "
                                f"{candidates} files were rejected (see {rejects_path}){also}")
    if len(counts) < 2:
        noun = "class" if len(counts) == 1 else "classes"
        raise PipelineError(f"found {len(counts)} {noun} ({', '.join(counts)}) in {raw_dir}; need at least two")


def summary(collection):
    reasons = collections.Counter(reason.split(" (")[0] for _, reason in collection.rejects)
    return {
        "classes": collection.class_counts(),
        "images": len(collection.index),
        "rejects": len(collection.rejects),
        "rejects_by_reason": dict(sorted(reasons.items())),
        "duplicates": len(collection.duplicates),
    }


def check_folders(raw_dir, out_dir, threads):
    if not os.path.isdir(raw_dir):
        raise PipelineError(f"{raw_dir}: the raw data folder does not exist")
    raw, out = os.path.realpath(raw_dir), os.path.realpath(out_dir)
    # The output folder is replaced as a whole, so it must not hold (or sit in) the raw data.
    if raw == out or raw.startswith(out + os.sep) or out.startswith(raw + os.sep):
        raise PipelineError(f"--out {out_dir} and --raw {raw_dir} overlap; they must be separate folders")
    if threads < 1:
        raise PipelineError(f"--threads {threads}: must be at least 1")


def collect(raw_dir, out_dir, temp_out, labeller, threads):
    """Label, decode and sort every file of ``raw_dir`` into ``temp_out``."""
    collection = Collection(raw_dir, out_dir, temp_out)
    labelled = []
    for relative_path in list_sources(raw_dir):
        label, reason = labeller.label(relative_path)
        if label is None:
            collection.reject(relative_path, reason)
        else:
            labelled.append((relative_path, label))
    sources = [collection.source(relative_path) for relative_path, _ in labelled]
    for (relative_path, label), decoded in zip(labelled, decode_all(sources, threads)):
        collection.add(relative_path, label, decoded)
    return collection


def structure(raw_dir, out_dir, index_path, rejects_path, duplicates_path, summary_path,
              layout, filename_regex=None, class_map=None, threads=1):
    """Sort ``raw_dir`` into ``out_dir/<class>/`` and write the tables; return the summary."""
    labeller = Labeller(layout, filename_regex, class_map)
    check_folders(raw_dir, out_dir, threads)
    with atomic.atomic_dir(out_dir) as temp_out:
        collection = collect(raw_dir, out_dir, temp_out, labeller, threads)
        # Written before the checks, so that an error can point at them.
        atomic.write_table(rejects_path, REJECTS_HEADER, collection.reject_rows())
        atomic.write_table(duplicates_path, DUPLICATES_HEADER, collection.duplicates)
        check_classes(collection, raw_dir, rejects_path, duplicates_path)
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
    parser.add_argument("--out", required=True, help="output folder, one subfolder per class (replaced)")
    parser.add_argument("--index", required=True, help="index.tsv to write: path, label, sha256, width, "
                                                       "height, source")
    parser.add_argument("--rejects", required=True, help="rejects.tsv to write: source, reason")
    parser.add_argument("--duplicates", required=True, help="duplicates.tsv to write: source, kept, sha256, note")
    parser.add_argument("--summary", required=True, help="summary.json to write")
    parser.add_argument("--layout", choices=LAYOUTS, default="folders",
                        help="folders: class = folder holding the file; filename: class from --filename-regex")
    parser.add_argument("--filename-regex", default=None,
                        help="with --layout filename: regex searched in the file name; its group 'label', "
                             "else its first group, is the class")
    parser.add_argument("--class-map", default="{}",
                        help='JSON object of regex -> new class name, e.g. \'{"Early|Pre|Pro": "ALL"}\'; '
                             "first full match wins")
    parser.add_argument("--threads", type=int, default=1, help="decoding processes")
    args = parser.parse_args(argv)
    result = structure(args.raw, args.out, args.index, args.rejects, args.duplicates, args.summary,
                       args.layout, args.filename_regex, parse_class_map(args.class_map), args.threads)
    print(f"{result['images']} images in {len(result['classes'])} classes, "
          f"{result['rejects']} rejected, {result['duplicates']} duplicates -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
