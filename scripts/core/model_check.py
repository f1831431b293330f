"""Model files from outside are programs: check them before TensorFlow or OpenVINO runs them.

A TensorFlow GraphDef can hold ops that read, write or list files (ReadFile, WriteFile,
MatchingFiles, Save/Restore, ImmutableConst, PrintV2 to a file), keep state (variables,
queues, tables), run Python (PyFunc), loop (While, control flow), call functions, or
allocate without bound (a Const declaring a huge shape from one stored value). An
OpenVINO IR's .xml can carry a DOCTYPE whose entities read other files or expand
exponentially, and Const offsets that point outside its .bin. So every model file read
from outside is checked here first, statically: parsed with protobuf (or defusedxml),
never run, and refused in one line (PipelineError) that names the node and op.

The rule is an allow-list: only the ops a feed-forward image network is made of, each a
pure function of its input tensors and attributes (convolution, pooling, matrix products,
normalisation, activations, element-wise arithmetic, reductions, shape manipulation,
resizing, quantisation arithmetic). Everything else is refused, whether or not it is
known to be dangerous; the list of refused groups below only gives the reason a better
name. Ops whose output size is set by a tensor (Fill, Tile, Pad, Range, BroadcastTo,
the resizes, transposed convolution) must take that size from a Const, checked against a
cap. docs/bad-input.md names what is refused and the caps.

    load_graph_def(path)            -> a checked GraphDef (protobuf only, no TensorFlow needed)
    check_graph_file(path)          -> the same, for a .pb that another library will read
    check_ir(xml_path)              -> an IR's .xml and .bin
    check_checkpoint_files(prefix)  -> a TF-Slim checkpoint's files (sizes, names)
"""
import math
import os
import re
import stat

from scripts.core.errors import PipelineError, shown

# ------------------------------------------------------------------ caps
MAX_GRAPH_BYTES = 2 ** 30  # a .pb file; protobuf's own limit is 2 GiB (VGG-16 frozen: 0.55 GB)
MAX_NODES = 200_000  # in the graph and its function library together (Inception V3: ~1,000)
MAX_CONSTANT_BYTES = 2 ** 30  # one Const as declared by its shape, whatever is stored
MAX_TOTAL_CONSTANT_BYTES = 2 ** 31  # all Consts together, as declared
MAX_TENSOR_ELEMENTS = 2 ** 28  # the output of Fill, BroadcastTo, Range, a transposed convolution; a resize's h x w
MAX_TILE_MULTIPLE = 4096  # Tile: the product of its multiples
MAX_PADDING = 4096  # Pad, MirrorPad: on any side of any dimension
MAX_IR_XML_BYTES = 256 * 2 ** 20
MAX_IR_BIN_BYTES = 2 ** 31
MAX_IR_LAYERS = 200_000
MAX_CHECKPOINT_BYTES = 2 ** 32
MAX_CHECKPOINT_SHARDS = 1000

# ------------------------------------------------------------------ TensorFlow ops
# Ops of a feed-forward image network. Each is stateless (no variables, queues, files or
# other resources), has no function attributes and no control flow, and its output is as
# large as its inputs and attributes make it (the sized ops below are checked further).
ALLOWED_OPS = frozenset("""
Const Placeholder PlaceholderWithDefault Identity IdentityN StopGradient PreventGradient Snapshot NoOp
EnsureShape
Conv2D Conv3D DepthwiseConv2dNative Conv2DBackpropInput MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum
BiasAdd BiasAddV1 FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 LRN
MaxPool MaxPoolV2 MaxPool3D AvgPool AvgPool3D
Relu Relu6 Elu Selu LeakyRelu Sigmoid Tanh Softplus Softsign Softmax LogSoftmax Erf Erfc
Add AddV2 AddN Sub Mul Div RealDiv DivNoNan FloorDiv FloorMod TruncateDiv Maximum Minimum SquaredDifference
Neg Abs Sign Square Sqrt Rsqrt Reciprocal Inv Exp Expm1 Log Log1p Pow Floor Ceil Round Rint ClipByValue
Sin Cos IsFinite IsNan IsInf
Equal NotEqual Greater GreaterEqual Less LessEqual LogicalAnd LogicalOr LogicalNot Select SelectV2 Cast
Mean Sum Max Min Prod All Any ArgMax ArgMin TopKV2 L2Loss
Shape ShapeN Size Rank Reshape Squeeze ExpandDims Transpose ConcatV2 Concat Pack Unpack Split SplitV Slice
StridedSlice ReverseV2 Gather GatherV2 GatherNd ZerosLike OnesLike SpaceToDepth DepthToSpace
Fill Range BroadcastTo Tile Pad PadV2 MirrorPad
ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea
Dequantize QuantizeV2 FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel FakeQuantWithMinMaxArgs
""".split())

# Sized ops: {op: (index of the input that sets the output size, how it is checked)}.
SIZED_OPS = {
    "Fill": (0, "shape"), "BroadcastTo": (1, "shape"), "Conv2DBackpropInput": (0, "shape"),
    "Range": (None, "range"), "Tile": (1, "multiples"),
    "Pad": (1, "paddings"), "PadV2": (1, "paddings"), "MirrorPad": (1, "paddings"),
    "ResizeBilinear": (1, "size"), "ResizeNearestNeighbor": (1, "size"), "ResizeBicubic": (1, "size"),
    "ResizeArea": (1, "size"),
}

# Only to name the reason of a refusal; anything not in ALLOWED_OPS is refused anyway.
REFUSED_GROUPS = (
    ("reads, writes or lists files", re.compile(
        r"^(ReadFile|WriteFile|MatchingFiles|ImmutableConst|Save|SaveV2|SaveSlices|Restore|RestoreV2|RestoreSlice"
        r"|MergeV2Checkpoints|ShardedFilename|ShardedFilespec|.*Reader(V2)?|.*Writer|WriteSummary|.*Summary(V2)?"
        r"|CreateSummaryFileWriter|FlushSummaryWriter|InitializeTableFromTextFile(V2)?|LoadAndRemapMatrix"
        r"|DecodeProtoV2|EncodeProto|GenerateVocabRemapping)$")),
    ("prints (PrintV2 appends to any file it names)", re.compile(r"^(Print|PrintV2)$")),
    ("runs Python code", re.compile(r"^(PyFunc|PyFuncStateless|EagerPyFunc)$")),
    ("is a queue, dataset or iterator", re.compile(r".*(Queue|Dataset|Iterator|Barrier|Stage|Unstage).*")),
    ("keeps state (variables, tables, resources)", re.compile(
        r".*(Variable|VarHandle|Assign|Scatter|Table|Resource|Accumulator|Stack|TensorArray|Mutex).*")),
    ("is control flow or a function call", re.compile(
        r"^(While|StatelessWhile|If|StatelessIf|Case|StatelessCase|PartitionedCall|StatefulPartitionedCall"
        r"|Enter|Exit|Switch|Merge|NextIteration|LoopCond|RefEnter|RefExit|RefSwitch|RefMerge|For|SymbolicGradient"
        r"|RemoteCall|.*Send|.*Recv|Collective.*)$")),
)
# DataType enums (tensorflow/core/framework/types.proto) that are handles, not numbers.
HANDLE_DTYPES = {20: "resource", 21: "variant", 120: "resource reference", 121: "variant reference"}
DTYPE_BYTES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 7: 1, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2,
               15: 4, 16: 2, 17: 2, 18: 16, 19: 2, 22: 4, 23: 8}  # float ... uint64; 7 string: per element


def refusal_reason(op):
    for reason, pattern in REFUSED_GROUPS:
        if pattern.match(op):
            return reason
    return "not an op of a feed-forward image network"


def graph_def_class():
    """GraphDef from TensorBoard's copy of TensorFlow's protos: no TensorFlow import (it costs 4 s)."""
    from tensorboard.compat.proto import graph_pb2
    return graph_pb2.GraphDef


def read_capped(path, max_bytes, what):
    """The bytes of a regular file of at most ``max_bytes``, or one line saying why not."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise PipelineError(f"{path}: not a regular file ({what})")
            if info.st_size > max_bytes:
                raise PipelineError(f"{path}: {info.st_size} bytes, more than the {max_bytes} allowed for {what}")
            return handle.read(max_bytes + 1)[:max_bytes + 1]
    except OSError as error:
        raise PipelineError(f"{path}: cannot read {what} ({error.strerror or error})") from None


def parse_graph_def(data, source, graph_def_type=None):
    """A GraphDef (of ``graph_def_type``, e.g. TensorFlow's own) from bytes, or one line; never a traceback."""
    graph_def = (graph_def_type or graph_def_class())()
    try:
        graph_def.ParseFromString(data)
    except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError, RecursionError, ...
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise PipelineError(f"{source}: not a frozen TensorFlow GraphDef (protobuf does not parse it: {reason})") \
            from None
    if not graph_def.node:
        raise PipelineError(f"{source}: not a frozen TensorFlow GraphDef (no nodes)")
    return graph_def


def load_graph_def(path, graph_def_type=None):
    """A checked GraphDef from a .pb file (see check_graph_def)."""
    graph_def = parse_graph_def(read_capped(path, MAX_GRAPH_BYTES, "a frozen graph"), path, graph_def_type)
    check_graph_def(graph_def, path)
    return graph_def


def check_graph_file(path):
    """Check a .pb that another library (OpenVINO's converter) will read."""
    load_graph_def(path)


# ------------------------------------------------------------------ checking a GraphDef
def check_graph_def(graph_def, source):
    """Refuse a GraphDef (or its function library) holding anything but allowed ops, or over a cap."""
    functions = {function.signature.name for function in graph_def.library.function}
    count = len(graph_def.node) + sum(len(function.node_def) for function in graph_def.library.function)
    if count > MAX_NODES:
        raise PipelineError(f"{source}: {count} nodes, more than the {MAX_NODES} allowed")
    budget = [0]
    nodes = {node.name: node for node in graph_def.node}
    for node in graph_def.node:
        check_node(node, source, "", functions, nodes, budget)
    for function in graph_def.library.function:
        where = f" in library function {shown(function.signature.name)}"
        inner = {node.name: node for node in function.node_def}
        for node in function.node_def:
            check_node(node, source, where, functions, inner, budget)


def refuse(source, node, where, reason):
    raise PipelineError(f"{source}: refusing node {shown(node.name)}{where} (op {shown(node.op)}): {reason}")


def check_node(node, source, where, functions, nodes, budget):
    if node.op in functions:
        refuse(source, node, where, "calls a library function")
    if node.op not in ALLOWED_OPS:
        refuse(source, node, where, refusal_reason(node.op))
    for key, value in node.attr.items():
        check_attr(source, node, where, key, value)
    if node.op == "Const":
        budget[0] += check_constant(source, node, where)
        if budget[0] > MAX_TOTAL_CONSTANT_BYTES:
            refuse(source, node, where, f"the constants declare more than {MAX_TOTAL_CONSTANT_BYTES} bytes in all")
    if node.op in SIZED_OPS:
        check_sized(source, node, where, nodes)


def check_attr(source, node, where, key, value):
    kind = value.WhichOneof("value")
    if kind == "func" or (kind == "list" and len(value.list.func)):
        refuse(source, node, where, f"attribute {key!r} names a function")
    types = [value.type] if kind == "type" else list(value.list.type) if kind == "list" else []
    for dtype in types:
        if dtype in HANDLE_DTYPES:
            refuse(source, node, where, f"attribute {key!r} is of type {HANDLE_DTYPES[dtype]}")


def declared_elements(shape):
    """Elements of a TensorShapeProto, or None if unknown or negative."""
    if shape.unknown_rank or any(dim.size < 0 for dim in shape.dim):
        return None
    return math.prod(dim.size for dim in shape.dim)


def check_constant(source, node, where):
    """The bytes a Const declares; refused over the cap (one stored value can fill any shape)."""
    tensor = node.attr["value"].tensor
    if tensor.dtype in HANDLE_DTYPES:
        refuse(source, node, where, f"a constant of type {HANDLE_DTYPES[tensor.dtype]}")
    elements = declared_elements(tensor.tensor_shape)
    if elements is None:
        refuse(source, node, where, "a constant of unknown or negative shape")
    size = elements * DTYPE_BYTES.get(tensor.dtype, 8) + sum(len(value) for value in tensor.string_val)
    if size > MAX_CONSTANT_BYTES:
        dims = "x".join(str(dim.size) for dim in tensor.tensor_shape.dim)
        refuse(source, node, where, f"a constant of shape [{dims}] ({size} bytes declared, at most "
                                    f"{MAX_CONSTANT_BYTES})")
    return size


def constant_values(tensor):
    """The integer values of a small Const tensor proto, flat; None if not integers."""
    import numpy as np
    types = {3: np.int32, 9: np.int64, 1: np.float32, 2: np.float64}
    if tensor.dtype not in types:
        return None
    elements = declared_elements(tensor.tensor_shape)
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype=np.dtype(types[tensor.dtype]).newbyteorder("<"))
    else:
        stored = list(tensor.int_val or tensor.int64_val or tensor.float_val or tensor.double_val)
        values = np.array(stored or [0])
        if elements is not None and len(values) < elements:  # the last value fills the rest
            values = np.concatenate([values, np.full(elements - len(values), values[-1])])
    return [float(value) for value in values]


def source_constant(name, nodes):
    """The Const node feeding input ``name`` through Identity nodes, or None."""
    for _ in range(100):
        node = nodes.get(name.lstrip("^").split(":")[0])
        if node is None or node.op not in ("Identity", "Const"):
            return None
        if node.op == "Const":
            return node
        name = node.input[0] if node.input else ""
    return None


def check_sized(source, node, where, nodes):
    """A sized op takes its size from a Const, and the size it gives is within the cap."""
    index, kind = SIZED_OPS[node.op]
    indices = [0, 1, 2] if index is None else [index]
    data_inputs = [name for name in node.input if not name.startswith("^")]
    values = []
    for position in indices:
        constant = source_constant(data_inputs[position], nodes) if position < len(data_inputs) else None
        numbers = constant_values(constant.attr["value"].tensor) if constant is not None else None
        if numbers is None:
            refuse(source, node, where, "its output size comes from a computed tensor, not a constant")
        values.append(numbers)
    cap = {"multiples": MAX_TILE_MULTIPLE, "paddings": MAX_PADDING}.get(kind, MAX_TENSOR_ELEMENTS)
    if kind == "range":
        (start,), (limit,), (delta,) = ([value[0] if value else 0] for value in values)
        amount = -1 if delta == 0 else math.ceil(abs(limit - start) / abs(delta))
    elif kind == "paddings":
        amount = max(values[0], default=0) if min(values[0], default=0) >= 0 else -1
    else:  # a shape, a resize's size, Tile's multiples: their product
        amount = math.prod(values[0]) if min(values[0], default=0) >= 0 else -1
    if not 0 <= amount <= cap:
        shown_values = values[0] if len(values) == 1 else values
        refuse(source, node, where, f"its constant {kind} {shown(str(shown_values))} is over the cap of {cap} "
                                    "(or negative)")


def check_tensor_sizes(graph, source):
    """Refuse a graph (a tf.Graph, imported, not run) where a tensor's static shape exceeds the cap.

    Constants small enough to pass can still multiply out when broadcast ([100000, 1] +
    [1, 100000]) or multiplied as an outer product; TensorFlow's shape inference, done at
    import, knows every such shape. An unknown dimension (the batch) counts as 1.
    """
    for operation in graph.get_operations():
        for output in operation.outputs:
            if output.shape.rank is None:
                continue
            elements = math.prod(1 if dim is None else max(dim, 0) for dim in output.shape.as_list())
            if elements > MAX_TENSOR_ELEMENTS:
                raise PipelineError(f"{source}: refusing node {shown(operation.name)} (op {shown(operation.type)}): "
                                    f"its output of shape {output.shape.as_list()} holds more than "
                                    f"{MAX_TENSOR_ELEMENTS} elements per image")


# ------------------------------------------------------------------ OpenVINO IR
# Operation types of a converted image network (OpenVINO opsets 1-19). Stateless and free
# of sub-graphs: ReadValue/Assign (state), Loop, TensorIterator and If (bodies) are refused,
# as is any type of an extension or of an unknown opset.
ALLOWED_IR_TYPES = frozenset("""
Parameter Result Constant Convert ConvertLike Convolution GroupConvolution ConvolutionBackpropData
GroupConvolutionBackpropData MatMul Add Subtract Multiply Divide Power Maximum Minimum SquaredDifference
FloorMod Mod Negative Abs Sign Sqrt Exp Log Floor Ceiling Round Erf Clamp Relu PRelu Elu Selu Sigmoid Tanh
HSigmoid HSwish Swish Mish Gelu SoftPlus SoftSign SoftMax LogSoftmax BatchNormInference MVN NormalizeL2 LRN
MaxPool AvgPool AdaptiveAvgPool AdaptiveMaxPool ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1
ReduceL2 Concat Reshape Squeeze Unsqueeze Transpose StridedSlice Slice Split VariadicSplit Gather ShapeOf
Broadcast Tile Pad Interpolate Reverse ReverseSequence Select Equal NotEqual Greater GreaterEqual Less LessEqual
LogicalAnd LogicalOr LogicalNot TopK DepthToSpace SpaceToDepth ShuffleChannels FakeQuantize FakeConvert
Range Einsum Identity
Const ReLU Softmax
""".split())  # the last line: names the .xml uses for Constant, Relu and SoftMax
IR_OPSET = re.compile(r"^opset([1-9]|1[0-9])$")
IR_ELEMENT_BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16, "i64": 64, "i32": 32, "i16": 16, "i8": 8,
                   "u64": 64, "u32": 32, "u16": 16, "u8": 8, "boolean": 8, "i4": 4, "u4": 4, "u1": 1, "u2": 2,
                   "u3": 3, "u6": 6, "nf4": 4, "f8e4m3": 8, "f8e5m2": 8, "f4e2m1": 4, "f8e8m0": 8}


def parse_ir_xml(xml_path, data):
    """The IR's XML tree, parsed so that no DOCTYPE, entity or external reference is honoured."""
    import defusedxml.ElementTree
    from defusedxml import DefusedXmlException
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise PipelineError(f"{xml_path}: refusing an OpenVINO IR with a DOCTYPE or ENTITY declaration "
                            "(entities can read other files or expand without bound)")
    try:
        return defusedxml.ElementTree.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                                 forbid_external=True)
    except DefusedXmlException as error:
        raise PipelineError(f"{xml_path}: refusing an OpenVINO IR: {error}") from None
    except Exception as error:  # noqa: BLE001 - ParseError, or an odd encoding
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise PipelineError(f"{xml_path}: not an OpenVINO IR (the XML does not parse: {reason})") from None


def check_ir(xml_path, bin_path=None):
    """Refuse an IR whose .xml or .bin is oversized, hostile, of unknown ops or inconsistent."""
    bin_path = bin_path or os.path.splitext(xml_path)[0] + ".bin"
    root = parse_ir_xml(xml_path, read_capped(xml_path, MAX_IR_XML_BYTES, "an OpenVINO IR's .xml"))
    if root.tag != "net":
        raise PipelineError(f"{xml_path}: not an OpenVINO IR (its root element is {shown(root.tag)}, not 'net')")
    layers = list(root.iter("layer"))
    if len(layers) > MAX_IR_LAYERS:
        raise PipelineError(f"{xml_path}: {len(layers)} layers, more than the {MAX_IR_LAYERS} allowed")
    if not layers:
        raise PipelineError(f"{xml_path}: not an OpenVINO IR (no layers)")
    try:
        bin_size = os.stat(bin_path).st_size if os.path.exists(bin_path) else 0
    except OSError as error:
        raise PipelineError(f"{bin_path}: cannot read the IR's weights ({error.strerror})") from None
    if bin_size > MAX_IR_BIN_BYTES:
        raise PipelineError(f"{bin_path}: {bin_size} bytes, more than the {MAX_IR_BIN_BYTES} allowed")
    for layer in layers:
        check_ir_layer(xml_path, bin_path, bin_size, layer)


def check_ir_layer(xml_path, bin_path, bin_size, layer):
    kind, version = layer.get("type", ""), layer.get("version", "")
    name = f"layer {shown(layer.get('name', ''))} (type {shown(kind)}, version {shown(version)})"
    if kind not in ALLOWED_IR_TYPES or not IR_OPSET.match(version):
        raise PipelineError(f"{xml_path}: refusing {name}: not an operation of a feed-forward image network "
                            "in a standard OpenVINO opset")
    if layer.find("body") is not None or layer.find("then_body") is not None:
        raise PipelineError(f"{xml_path}: refusing {name}: it holds a sub-graph")
    for port in layer.iter("port"):
        try:
            dims = [max(int(dim.text), 1) for dim in port.iter("dim")]  # -1 (dynamic) counts as 1
        except (TypeError, ValueError):
            continue  # a symbolic or ranged dimension: no static size
        if math.prod(dims) > MAX_TENSOR_ELEMENTS:
            raise PipelineError(f"{xml_path}: refusing {name}: a port of shape {dims} holds more than "
                                f"{MAX_TENSOR_ELEMENTS} elements")
    if kind not in ("Const", "Constant"):
        return
    data = layer.find("data")
    try:
        offset, size = int(data.get("offset")), int(data.get("size"))
        shape = [int(dim) for dim in data.get("shape", "").split(",") if dim.strip()]
        bits = IR_ELEMENT_BITS[data.get("element_type")]
    except (AttributeError, TypeError, ValueError, KeyError):
        raise PipelineError(f"{xml_path}: refusing {name}: its data (offset, size, shape, element_type) "
                            "is missing or malformed") from None
    expected = math.ceil(math.prod(shape) * bits / 8)
    if offset < 0 or size < 0 or size != expected:
        raise PipelineError(f"{xml_path}: refusing {name}: {size} bytes at offset {offset} for a "
                            f"{data.get('element_type')} tensor of shape {shape} ({expected} bytes)")
    if offset + size > bin_size:
        raise PipelineError(f"{bin_path}: {bin_size} bytes, too short for {name}, which needs bytes {offset} to "
                            f"{offset + size} (a truncated or mismatched .bin)")


# ------------------------------------------------------------------ TF-Slim checkpoints
CHECKPOINT_PARTS = re.compile(r"^(?P<prefix>.+\.ckpt)(\.index|\.data-(?P<shard>\d{5})-of-(?P<shards>\d{5})"
                              r"|\.meta)?$")
NOTES = re.compile(r"^(checkpoint|README.*|LICENSE.*|.*\.(txt|md))$", re.IGNORECASE)
# The marker Snakemake leaves in a folder output (the `extract` rule's unpacked/): not from the archive.
SNAKEMAKE_MARKER = ".snakemake_timestamp"


def check_checkpoint_folder(folder):
    """An unpacked checkpoint archive holds only checkpoint files and notes, of bounded size."""
    total = 0
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            if parent == folder and name == SNAKEMAKE_MARKER:
                continue
            if not (CHECKPOINT_PARTS.match(name) or NOTES.match(name)):
                raise PipelineError(f"{path}: refusing a file in the checkpoint archive that is not part of a "
                                    "TF-Slim checkpoint (.ckpt, .ckpt.index, .ckpt.data-*, .ckpt.meta) or a note")
            total += os.lstat(path).st_size
    if total > MAX_CHECKPOINT_BYTES:
        raise PipelineError(f"{folder}: the checkpoint archive holds {total} bytes, more than {MAX_CHECKPOINT_BYTES}")


def check_checkpoint_files(prefix):
    """A checkpoint (V1: one file; V2: .index and every .data shard) is regular files of bounded size."""
    if os.path.isfile(prefix):  # V1
        files = [prefix]
    else:
        files = [prefix + ".index"]
        index = os.path.basename(prefix)
        shards = sorted(name for name in os.listdir(os.path.dirname(prefix) or ".")
                        if name.startswith(index + ".data-"))
        counts = {CHECKPOINT_PARTS.match(name).group("shards") for name in shards if CHECKPOINT_PARTS.match(name)}
        if len(counts) != 1 or len(shards) != int(next(iter(counts))) or int(next(iter(counts))) > \
                MAX_CHECKPOINT_SHARDS:
            raise PipelineError(f"{prefix}: a V2 checkpoint needs all its .data-NNNNN-of-MMMMM shards "
                                f"(found {len(shards)}: {', '.join(shards[:3]) or 'none'})")
        files += [os.path.join(os.path.dirname(prefix), name) for name in shards]
    total = 0
    for path in files:
        try:
            info = os.stat(path)
        except OSError as error:
            raise PipelineError(f"{path}: cannot read the checkpoint ({error.strerror})") from None
        if not stat.S_ISREG(info.st_mode):
            raise PipelineError(f"{path}: not a regular file (checkpoint)")
        total += info.st_size
    if total > MAX_CHECKPOINT_BYTES:
        raise PipelineError(f"{prefix}: the checkpoint is {total} bytes, more than {MAX_CHECKPOINT_BYTES}")
    return total


def check_checkpoint_shapes(prefix, expected, file_bytes):
    """Every variable to restore is in the checkpoint with its shape and type, read from the index alone.

    ``expected``: {name: (shape, numpy dtype name)}. Restoring allocates what the
    checkpoint declares; checked first, a hostile shape is refused before any allocation,
    and a checkpoint declaring more bytes than its files hold is refused as truncated.
    """
    from tensorflow.python.training import py_checkpoint_reader
    try:
        reader = py_checkpoint_reader.NewCheckpointReader(prefix)
    except Exception as error:  # noqa: BLE001 - the reader raises DataLossError, NotFoundError, ...
        first = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise PipelineError(f"{prefix}: not a TensorFlow checkpoint ({first})") from None
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    declared = 0
    for name, (shape, dtype) in sorted(expected.items()):
        if name not in shapes:
            raise PipelineError(f"{prefix}: not an Inception V3 checkpoint (no variable {shown(name)})")
        if list(shapes[name]) != list(shape) or dtypes[name].name != dtype:
            raise PipelineError(f"{prefix}: variable {shown(name)} is {dtypes[name].name} {list(shapes[name])} in the "
                                f"checkpoint, the network needs {dtype} {list(shape)}")
        declared += math.prod(shape) * dtypes[name].size
    if declared > file_bytes:
        raise PipelineError(f"{prefix}: the variables declare {declared} bytes, the checkpoint files hold only "
                            f"{file_bytes} (truncated?)")
