"""The TFRecord file format and TF-Slim's image Example, read and written without TensorFlow.

A TFRecord file is a sequence of records: a little-endian uint64 length, the masked
CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data. Each record of
ours is a serialized ``tf.train.Example`` with TF-Slim's standard image keys
(``image/encoded``, ``image/format``, ``image/class/label``, ...). The Example message
is declared here in its own descriptor pool with TensorFlow's field numbers, so the
bytes are the same and the stages that only move records need not load TensorFlow
(3.8 s per process). Serialization is deterministic (map keys sorted), so the same
images give byte-identical files.
"""
import os
import struct

import crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from scripts.core import atomic
from scripts.core.errors import PipelineError

FORMATS = {".jpg": b"jpeg", ".jpeg": b"jpeg", ".png": b"png", ".gif": b"gif", ".bmp": b"bmp"}
_MASK_DELTA = 0xA282EAD8


def _masked_crc(data):
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _message_type(file_proto, name, fields, options=None):
    message = file_proto.message_type.add(name=name) if options is None else options
    for number, (field_name, label, kind, type_name) in enumerate(fields, start=1):
        field = message.field.add(name=field_name, number=number, label=label, type=kind)
        if type_name:
            field.type_name = type_name
    return message


def _example_class():
    """``tensorflow.Example`` (example.proto and feature.proto) in a private descriptor pool."""
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="pipeline/example.proto", package="tensorflow",
                                               syntax="proto3")
    _message_type(proto, "BytesList", [("value", F.LABEL_REPEATED, F.TYPE_BYTES, None)])
    _message_type(proto, "FloatList", [("value", F.LABEL_REPEATED, F.TYPE_FLOAT, None)])
    _message_type(proto, "Int64List", [("value", F.LABEL_REPEATED, F.TYPE_INT64, None)])
    feature = _message_type(proto, "Feature", [
        ("bytes_list", F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".tensorflow.BytesList"),
        ("float_list", F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".tensorflow.FloatList"),
        ("int64_list", F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".tensorflow.Int64List")])
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = _message_type(proto, "Features", [
        ("feature", F.LABEL_REPEATED, F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    _message_type(proto, "", [("key", F.LABEL_OPTIONAL, F.TYPE_STRING, None),
                              ("value", F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".tensorflow.Feature")], entry)
    _message_type(proto, "Example", [("features", F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".tensorflow.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _example_class()


# ------------------------------------------------------------------ records
def write_records(path, records):
    """Write serialized records to a TFRecord file, atomically; return their number."""
    count = 0
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        for data in records:
            length = struct.pack("<Q", len(data))
            handle.write(length + struct.pack("<I", _masked_crc(length)))
            handle.write(data + struct.pack("<I", _masked_crc(data)))
            count += 1
    return count


def read_records(path):
    """Yield the records of a TFRecord file, checking both checksums of each."""
    with open(path, "rb") as handle:
        while header := handle.read(12):
            if len(header) < 12:
                raise PipelineError(f"{path}: truncated TFRecord file")
            length, length_crc = struct.unpack("<QI", header)
            if _masked_crc(header[:8]) != length_crc:
                raise PipelineError(f"{path}: corrupt TFRecord file (bad length checksum)")
            data = handle.read(length)
            footer = handle.read(4)
            if len(data) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != _masked_crc(data):
                raise PipelineError(f"{path}: truncated or corrupt TFRecord file")
            yield data


# ------------------------------------------------------------------ image examples
def image_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise PipelineError(f"{path}: unsupported image extension {ext!r} for a TFRecord")
    return FORMATS[ext]


def make_example(encoded, fmt, label, height, width, filename, sha256):
    """A serialized TF-Slim image Example."""
    example = Example()
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value.append(encoded)
    feature["image/format"].bytes_list.value.append(fmt)
    feature["image/class/label"].int64_list.value.append(int(label))
    feature["image/height"].int64_list.value.append(int(height))
    feature["image/width"].int64_list.value.append(int(width))
    feature["image/filename"].bytes_list.value.append(filename.encode("utf-8"))
    feature["image/sha256"].bytes_list.value.append(sha256.encode("ascii"))
    return example.SerializeToString(deterministic=True)


def parse_example(serialized):
    """A dict of the features of one serialized image Example."""
    feature = Example.FromString(serialized).features.feature
    return {
        "encoded": feature["image/encoded"].bytes_list.value[0],
        "format": feature["image/format"].bytes_list.value[0].decode(),
        "label": feature["image/class/label"].int64_list.value[0],
        "height": feature["image/height"].int64_list.value[0],
        "width": feature["image/width"].int64_list.value[0],
        "filename": feature["image/filename"].bytes_list.value[0].decode("utf-8"),
        "sha256": feature["image/sha256"].bytes_list.value[0].decode("ascii"),
    }


def read_examples(paths):
    """Yield the parsed examples of the given TFRecord files, in order."""
    for path in paths:
        for serialized in read_records(path):
            yield parse_example(serialized)
