"""Model files from outside are checked before TensorFlow or OpenVINO reads them (scripts/core/model_check.py).

Hostile GraphDefs are built by hand (protobuf) or with TensorFlow; each is refused in one
line naming its node and op, and a sentinel file such a graph would write is never
written when predict or the backbone stage is given it. Hostile IR .xml files, odd
checkpoint folders and a model.json of another model are refused in one line too; the
real graphs and IRs pass.
"""
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from tensorboard.compat.proto import graph_pb2, types_pb2

from scripts import predict as predict_cli
from scripts.core import atomic, model_check
from scripts.core.errors import PipelineError

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
WEIGHTS = os.path.join(SHARED, "weights")


# ------------------------------------------------------------------ GraphDefs built by hand
def node(graph, name, op, inputs=(), **attrs):
    new = graph.node.add(name=name, op=op, input=list(inputs))
    for key, value in attrs.items():
        new.attr[key].CopyFrom(value)
    return new


def float_const(graph, name, dims, values=(0.0,)):
    new = node(graph, name, "Const")
    new.attr["dtype"].type = types_pb2.DT_FLOAT
    tensor = new.attr["value"].tensor
    tensor.dtype = types_pb2.DT_FLOAT
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(values)
    return new


def int_const(graph, name, values):
    new = node(graph, name, "Const")
    new.attr["dtype"].type = types_pb2.DT_INT32
    tensor = new.attr["value"].tensor
    tensor.dtype = types_pb2.DT_INT32
    tensor.tensor_shape.dim.add(size=len(values))
    tensor.int_val.extend(values)
    return new


def string_const(graph, name, text):
    new = node(graph, name, "Const")
    new.attr["dtype"].type = types_pb2.DT_STRING
    tensor = new.attr["value"].tensor
    tensor.dtype = types_pb2.DT_STRING
    tensor.string_val.append(text.encode())
    return new


def small_network():
    """input -> Relu -> final_result: the allowed part every hostile graph below is added to."""
    graph = graph_pb2.GraphDef()
    placeholder = node(graph, "input", "Placeholder")
    placeholder.attr["dtype"].type = types_pb2.DT_FLOAT
    node(graph, "relu", "Relu", ["input"]).attr["T"].type = types_pb2.DT_FLOAT
    node(graph, "final_result", "Softmax", ["relu"]).attr["T"].type = types_pb2.DT_FLOAT
    return graph


def with_write_file(graph):
    string_const(graph, "path", "/tmp/sentinel")
    string_const(graph, "contents", "owned")
    node(graph, "writer", "WriteFile", ["path", "contents"])


def with_read_file(graph):
    string_const(graph, "path", "/etc/passwd")
    node(graph, "reader", "ReadFile", ["path"])


def with_matching_files(graph):
    string_const(graph, "pattern", "/home/*/.ssh/*")
    node(graph, "lister", "MatchingFiles", ["pattern"])


def with_py_func(graph):
    node(graph, "python", "PyFunc", ["input"]).attr["token"].s = b"pyfunc_0"


def with_save(graph):
    string_const(graph, "prefix", "/tmp/ckpt")
    node(graph, "saver", "SaveV2", ["prefix", "input"])


def with_print_to_file(graph):
    string_const(graph, "message", "secret")
    node(graph, "printer", "PrintV2", ["message"]).attr["output_stream"].s = b"file:///tmp/sentinel"


def with_immutable_const(graph):
    node(graph, "mapped", "ImmutableConst").attr["memory_region_name"].s = b"/etc/shadow"


def with_queue(graph):
    node(graph, "queue", "FIFOQueueV2")


def with_while(graph):
    node(graph, "loop", "While", ["input"])


def with_variable(graph):
    node(graph, "weights", "VariableV2")


def with_hostile_library_function(graph):
    function = graph.library.function.add()
    function.signature.name = "innocent_helper"
    inner = function.node_def.add(name="leak", op="ReadFile", input=["path"])
    inner.attr["T"].type = types_pb2.DT_STRING


def with_function_call(graph):
    function = graph.library.function.add()
    function.signature.name = "helper"
    node(graph, "call", "helper", ["input"])


def with_function_attribute(graph):
    node(graph, "mapped", "Identity", ["input"]).attr["f"].func.name = "helper"


def with_huge_constant(graph):
    float_const(graph, "zeros", [1_000_000, 1_000_000])  # one stored value fills 4 TB


def with_huge_fill(graph):
    int_const(graph, "dims", [100_000, 100_000, 100])
    float_const(graph, "value", [])
    node(graph, "filler", "Fill", ["dims", "value"])


def with_computed_tile(graph):
    node(graph, "shape", "Shape", ["input"])
    node(graph, "tiled", "Tile", ["input", "shape"])


def with_resource_type(graph):
    node(graph, "handle", "Identity", ["input"]).attr["T"].type = types_pb2.DT_RESOURCE


HOSTILE = [
    (with_write_file, "writer", "WriteFile", "reads, writes or lists files"),
    (with_read_file, "reader", "ReadFile", "reads, writes or lists files"),
    (with_matching_files, "lister", "MatchingFiles", "reads, writes or lists files"),
    (with_py_func, "python", "PyFunc", "runs Python code"),
    (with_save, "saver", "SaveV2", "reads, writes or lists files"),
    (with_print_to_file, "printer", "PrintV2", "PrintV2 appends to any file"),
    (with_immutable_const, "mapped", "ImmutableConst", "reads, writes or lists files"),
    (with_queue, "queue", "FIFOQueueV2", "queue, dataset or iterator"),
    (with_while, "loop", "While", "control flow"),
    (with_variable, "weights", "VariableV2", "keeps state"),
    (with_hostile_library_function, "leak' in library function 'innocent_helper", "ReadFile", "reads, writes"),
    (with_function_call, "call", "helper", "calls a library function"),
    (with_function_attribute, "mapped", "Identity", "attribute 'f' names a function"),
    (with_huge_constant, "zeros", "Const", "shape [1000000x1000000]"),
    (with_huge_fill, "filler", "Fill", "over the cap"),
    (with_computed_tile, "tiled", "Tile", "computed tensor"),
    (with_resource_type, "handle", "Identity", "of type resource"),
]


@pytest.mark.parametrize("add, name, op, reason", HOSTILE, ids=[case[2] + "-" + case[0].__name__ for case in HOSTILE])
def test_a_hostile_graph_is_refused_in_one_line_naming_node_and_op(tmp_path, add, name, op, reason):
    graph = small_network()
    add(graph)
    path = tmp_path / "model.pb"
    path.write_bytes(graph.SerializeToString())
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        model_check.load_graph_def(str(path))
    message = str(caught.value)
    assert time.monotonic() - started < 5
    assert "\n" not in message
    assert message.startswith(f"{path}: refusing node '{name}") and f"(op '{op}')" in message, message
    assert reason in message, message


def test_the_allowed_part_alone_passes(tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(small_network().SerializeToString())
    assert [node.op for node in model_check.load_graph_def(str(path)).node] == ["Placeholder", "Relu", "Softmax"]


def test_too_many_nodes_is_refused_before_any_node_is_looked_at(tmp_path):
    graph = small_network()
    for number in range(model_check.MAX_NODES):
        graph.node.add(name=f"n{number}", op="Identity", input=["input"])
    path = tmp_path / "model.pb"
    path.write_bytes(graph.SerializeToString())
    with pytest.raises(PipelineError, match=rf"{model_check.MAX_NODES + 3} nodes, more than the "
                                            rf"{model_check.MAX_NODES} allowed$"):
        model_check.load_graph_def(str(path))


def test_nodes_in_library_functions_count_towards_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "MAX_NODES", 10)
    graph = small_network()
    function = graph.library.function.add()
    function.signature.name = "unused"
    for number in range(8):
        function.node_def.add(name=f"n{number}", op="Relu", input=["x"])
    with pytest.raises(PipelineError, match="11 nodes, more than the 10 allowed"):
        model_check.check_graph_def(graph, "g.pb")


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(model_check, "MAX_GRAPH_BYTES", 1000)
    path = tmp_path / "big.pb"
    with open(path, "wb") as handle:
        handle.truncate(10 ** 12)  # sparse: 1 TB that costs no disk
    with pytest.raises(PipelineError, match=r"big.pb: 1000000000000 bytes, more than the 1000 allowed"):
        model_check.load_graph_def(str(path))


@pytest.mark.parametrize("make", [
    lambda real: os.urandom(4096),
    lambda real: real[: len(real) // 2 + 7],  # cut in the middle of a node
    lambda real: b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 10,  # a length prefix far past the end
    lambda real: b"<!DOCTYPE html><html>login</html>",
    lambda real: b"",
], ids=["random", "truncated", "bad-length", "html", "empty"])
def test_bytes_that_are_no_graph_are_one_line_never_a_traceback(tmp_path, make):
    real = (tmp_path / "real.pb")
    graph = small_network()
    float_const(graph, "weights", [64, 64], list(np.arange(64 * 64, dtype=np.float32)))
    real.write_bytes(graph.SerializeToString())
    path = tmp_path / "model.pb"
    path.write_bytes(make(real.read_bytes()))
    with pytest.raises(PipelineError, match=r"model.pb: not a frozen TensorFlow GraphDef \(") as caught:
        model_check.load_graph_def(str(path))
    assert "\n" not in str(caught.value)


def test_a_folder_or_fifo_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "fifo.pb")
    with pytest.raises(PipelineError, match="not a regular file"):
        model_check.load_graph_def(str(tmp_path / "fifo.pb"))


# ------------------------------------------------------------------ the real graphs pass
@pytest.fixture(scope="module")
def mobilenet_graphs(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("mobilenet")
    with tarfile.open(os.path.join(shared_data, "weights", "mobilenet_v1_0.25_224_frozen.tgz")) as tar:
        tar.extractall(folder, filter="data")
    return sorted(str(path) for path in folder.rglob("*.pb"))


def test_the_real_frozen_graphs_pass_quickly(mobilenet_graphs, shared_data):
    paths = mobilenet_graphs + [os.path.join(shared_data, "weights", "inception_v3_mixed8_frozen.pb")]
    started = time.monotonic()
    counts = [len(model_check.load_graph_def(path).node) for path in paths]
    assert counts == [555, 180, 419]  # frozen_graph.pb, quantized_graph.pb, Inception V3 to mixed_8
    assert time.monotonic() - started < 10


def test_every_allowed_op_is_a_stateless_tensorflow_op_without_function_attributes():
    """The allow-list checked against TensorFlow's own op registry, so a typo or a stateful op cannot slip in."""
    from scripts.core import tfcompat
    tfcompat.tf_v1()
    from tensorflow.python.framework import op_def_registry
    for op in sorted(model_check.ALLOWED_OPS):
        op_def = op_def_registry.get(op)
        assert op_def is not None, f"{op} is not a TensorFlow op"
        assert not op_def.is_stateful, f"{op} is stateful"
        assert not [attr.name for attr in op_def.attr if attr.type in ("func", "list(func)")], op
        for arg in list(op_def.input_arg) + list(op_def.output_arg):
            assert arg.type not in model_check.HANDLE_DTYPES, (op, arg.name)
    for op in ("ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "RestoreV2", "PrintV2", "PyFunc", "ImmutableConst",
               "FIFOQueueV2", "TFRecordDataset", "VarHandleOp", "While", "StatefulPartitionedCall"):
        assert op not in model_check.ALLOWED_OPS


# ------------------------------------------------------------------ a hostile graph given to the stages
@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    """A working classifier whose output depends on a WriteFile node (run, it writes the sentinel)."""
    root = tmp_path_factory.mktemp("hostile")
    sentinel = root / "sentinel.txt"
    script = f"""
import sys
sys.path.insert(0, {REPO!r})
import numpy as np
from scripts.core import atomic, images, tfcompat
tf = tfcompat.tf_v1()
graph = tf.Graph()
with graph.as_default():
    pixels = tf.placeholder(tf.float32, [None, 8, 8, 3], name="input")
    write = tf.io.write_file({str(sentinel)!r}, "written by the model")
    with tf.control_dependencies([write]):
        mean = tf.reduce_mean(pixels, axis=[1, 2])
    tf.nn.softmax(tf.matmul(mean, tf.constant(np.eye(3, dtype=np.float32))), name="final_result")
    tf.identity(mean, name="features")
atomic.write_bytes("model/frozen_model.pb", graph.as_graph_def().SerializeToString())
atomic.write_json("model/model.json", {{"input_node": "input", "output_node": "final_result",
                  "labels": ["a", "b", "c"], "preprocessing": images.preprocessing_contract(8, (-1.0, 1.0)),
                  "note": ""}})
"""
    (root / "model").mkdir()
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "red.png")
    return root


def test_control_the_hostile_graph_writes_its_sentinel_when_tensorflow_runs_it(hostile_model, tmp_path):
    """Without the check, TensorFlow runs the WriteFile node: the test below proves something."""
    from scripts.core import tfcompat
    tf = tfcompat.tf_v1()
    graph_def = tf.GraphDef()
    graph_def.ParseFromString((hostile_model / "model" / "frozen_model.pb").read_bytes())
    for node_def in graph_def.node:  # aim it at this test's own folder
        values = node_def.attr["value"].tensor.string_val
        if values and values[0] == str(hostile_model / "sentinel.txt").encode():
            values[0] = str(tmp_path / "sentinel.txt").encode()
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        with tf.Session() as session:
            session.run("final_result:0", {"input:0": np.zeros((1, 8, 8, 3), np.float32)})
    assert (tmp_path / "sentinel.txt").read_text() == "written by the model"


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_predict_refuses_the_hostile_graph_and_nothing_is_written(hostile_model, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "predict.py"), "--model",
                             str(hostile_model / "model" / "frozen_model.pb"), "--csv", "out.csv",
                             str(hostile_model / "red.png")], cwd=tmp_path, capture_output=True, text=True,
                            check=False, timeout=120)
    line = one_error_line(result)
    assert "refusing node 'WriteFile' (op 'WriteFile'): reads, writes or lists files" in line
    assert not (hostile_model / "sentinel.txt").exists()
    assert os.listdir(tmp_path) == []


def test_the_backbone_stage_refuses_the_hostile_graph_and_writes_nothing(hostile_model, tmp_path):
    result = subprocess.run([sys.executable, "-m", "scripts.model.backbone", "prepare", "--kind", "frozen_graph",
                             "--source", str(hostile_model / "model" / "frozen_model.pb"),
                             "--output-pb", str(tmp_path / "backbone.pb"), "--output-json",
                             str(tmp_path / "backbone.json"), "--input-size", "8", "--input-range", "-1", "1",
                             "--input-tensor", "input", "--bottleneck-tensor", "features"],
                            cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    line = one_error_line(result)
    assert "refusing node 'WriteFile' (op 'WriteFile')" in line
    assert not (hostile_model / "sentinel.txt").exists()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ OpenVINO IRs
@pytest.fixture(scope="module")
def small_ir(tmp_path_factory):
    """A real IR (input [1, 8, 8, 3] -> mean colour -> softmax) and its ir.json, made with OpenVINO's API."""
    import openvino as ov
    from openvino import opset13 as ops

    from scripts.core import images
    root = tmp_path_factory.mktemp("ir")
    image = ops.parameter([1, 8, 8, 3], np.float32, name="input")
    mean = ops.reduce_mean(image, np.array([1, 2], np.int64), keep_dims=False)
    logits = ops.matmul(mean, ops.constant(np.eye(3, dtype=np.float32) * 10), False, False)
    model = ov.Model([ops.softmax(logits, 1)], [image], "small")
    ov.save_model(model, str(root / "model.xml"), compress_to_fp16=False)
    atomic.write_json(root / "ir.json", {"labels": ["red", "green", "blue"], "precision": "FP32", "note": "",
                                         "preprocessing": images.preprocessing_contract(8, (-1.0, 1.0))})
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "red.png")
    return root


def copy_ir(small_ir, folder, xml_text=None, bin_bytes=None):
    folder.mkdir(exist_ok=True)
    (folder / "model.xml").write_text(xml_text if xml_text is not None else (small_ir / "model.xml").read_text())
    (folder / "model.bin").write_bytes(bin_bytes if bin_bytes is not None else (small_ir / "model.bin").read_bytes())
    (folder / "ir.json").write_text((small_ir / "ir.json").read_text())
    return folder / "model.xml"


def test_a_real_ir_passes_and_runs(small_ir):
    model_check.check_ir(str(small_ir / "model.xml"))
    model, _ = predict_cli.load_model(str(small_ir / "model.xml"))
    pixels = np.zeros((1, 8, 8, 3), np.float32)
    pixels[..., 0] = 1.0
    assert model(pixels).argmax() == 0


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<net name="&d;" version="11"><layers/></net>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY secret SYSTEM "file://{sentinel}">]>
<net name="x" version="11"><layers><layer id="0" name="&secret;" type="Parameter" version="opset1"/></layers></net>
"""
PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY % remote SYSTEM "file://{sentinel}"> %remote;]>
<net name="x" version="11"><layers/></net>
"""


@pytest.mark.parametrize("template", [BILLION_LAUGHS, EXTERNAL, PARAMETER_ENTITY], ids=["laughs", "external", "param"])
def test_an_ir_with_a_doctype_or_entities_is_refused_in_one_line(small_ir, tmp_path, template):
    sentinel = tmp_path / "secret.txt"
    sentinel.write_text("secret")
    os.chmod(sentinel, 0)  # reading it would be visible as an error; it must not be opened at all
    xml = copy_ir(small_ir, tmp_path / "ir", template.format(sentinel=sentinel))
    started = time.monotonic()
    with pytest.raises(PipelineError, match="refusing an OpenVINO IR with a DOCTYPE or ENTITY declaration") as caught:
        model_check.check_ir(str(xml))
    assert time.monotonic() - started < 2 and "\n" not in str(caught.value)


def test_an_unknown_or_stateful_ir_operation_is_refused_naming_the_layer(small_ir, tmp_path):
    text = (small_ir / "model.xml").read_text()
    for kind, version in (("ReadValue", "opset6"), ("MyCustomOp", "extension"), ("Loop", "opset5"),
                          ("Relu", "opset1")):
        edited = text.replace('type="SoftMax" version="opset8"', f'type="{kind}" version="{version}"', 1)
        if kind == "Relu":
            edited = text.replace('type="SoftMax" version="opset8"', 'type="SoftMax" version="custom_opset"', 1)
        assert edited != text
        xml = copy_ir(small_ir, tmp_path / kind, edited)
        with pytest.raises(PipelineError, match=r"refusing layer '.*' \(type '.*', version '.*'\): not an operation"):
            model_check.check_ir(str(xml))


def test_a_bin_too_short_for_the_constants_is_refused(small_ir, tmp_path):
    xml = copy_ir(small_ir, tmp_path / "short", bin_bytes=(small_ir / "model.bin").read_bytes()[:-5])
    with pytest.raises(PipelineError, match=r"model.bin: \d+ bytes, too short for layer .* \(a truncated or mismatched"):
        model_check.check_ir(str(xml))


def test_a_constant_whose_size_disagrees_with_its_shape_is_refused(small_ir, tmp_path):
    text = (small_ir / "model.xml").read_text()
    edited = text.replace('shape="3, 3"', 'shape="3000, 3000"', 1)
    assert edited != text
    with pytest.raises(PipelineError, match=r"36 bytes at offset \d+ for a f32 tensor of shape \[3000, 3000\]"):
        model_check.check_ir(str(copy_ir(small_ir, tmp_path / "shape", edited)))


@pytest.mark.parametrize("text, message", [
    ("<net><layers><layer", "the XML does not parse"),
    ("<html><body>login</body></html>", "its root element is 'html'"),
    ("\x00\x01garbage", "the XML does not parse"),
])
def test_an_xml_that_is_no_ir_is_one_line(small_ir, tmp_path, text, message):
    with pytest.raises(PipelineError, match=message):
        model_check.check_ir(str(copy_ir(small_ir, tmp_path / "x", text)))


def test_predict_refuses_a_hostile_ir_in_one_line(small_ir, tmp_path):
    sentinel = tmp_path / "secret.txt"
    sentinel.write_text("secret")
    xml = copy_ir(small_ir, tmp_path / "ir", EXTERNAL.format(sentinel=sentinel))
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "predict.py"), "--model", str(xml),
                             str(small_ir / "red.png")], cwd=tmp_path, capture_output=True, text=True, check=False,
                            timeout=120)
    assert "DOCTYPE or ENTITY" in one_error_line(result)


# ------------------------------------------------------------------ checkpoints
def test_a_checkpoint_archive_with_odd_members_is_refused(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "inception_v3.ckpt").write_bytes(b"x")
    (tmp_path / "ckpt" / "README.txt").write_text("notes")
    (tmp_path / "ckpt" / ".snakemake_timestamp").write_text("")  # Snakemake's marker of a folder output
    model_check.check_checkpoint_folder(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "graph.pb").write_bytes(small_network().SerializeToString())
    with pytest.raises(PipelineError, match="graph.pb: refusing a file in the checkpoint archive"):
        model_check.check_checkpoint_folder(str(tmp_path / "ckpt"))


def test_a_v2_checkpoint_missing_a_shard_is_refused(tmp_path):
    prefix = tmp_path / "model.ckpt"
    (tmp_path / "model.ckpt.index").write_bytes(b"index")
    (tmp_path / "model.ckpt.data-00000-of-00002").write_bytes(b"data")
    with pytest.raises(PipelineError, match=r"needs all its .data-NNNNN-of-MMMMM shards \(found 1"):
        model_check.check_checkpoint_files(str(prefix))
    (tmp_path / "model.ckpt.data-00001-of-00002").write_bytes(b"data")
    assert model_check.check_checkpoint_files(str(prefix)) == 13


def test_checkpoint_variables_are_checked_from_the_index_before_restoring(tmp_path):
    from scripts.core import tfcompat
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        tf.Variable(np.zeros((3, 4), np.float32), name="net/weights")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, str(tmp_path / "model.ckpt"), write_meta_graph=False)
    prefix = str(tmp_path / "model.ckpt")
    size = model_check.check_checkpoint_files(prefix)
    model_check.check_checkpoint_shapes(prefix, {"net/weights": ([3, 4], "float32")}, size)
    with pytest.raises(PipelineError, match=r"variable 'net/weights' is float32 \[3, 4\] in the checkpoint, the "
                                            r"network needs float32 \[300, 4\]"):
        model_check.check_checkpoint_shapes(prefix, {"net/weights": ([300, 4], "float32")}, size)
    with pytest.raises(PipelineError, match="no variable 'net/bias'"):
        model_check.check_checkpoint_shapes(prefix, {"net/bias": ([4], "float32")}, size)
    with pytest.raises(PipelineError, match="declare 48 bytes, the checkpoint files hold only 10"):
        model_check.check_checkpoint_shapes(prefix, {"net/weights": ([3, 4], "float32")}, 10)
    (tmp_path / "garbage.ckpt.index").write_bytes(os.urandom(300))
    (tmp_path / "garbage.ckpt.data-00000-of-00001").write_bytes(os.urandom(300))
    with pytest.raises(PipelineError, match="garbage.ckpt: not a TensorFlow checkpoint"):
        model_check.check_checkpoint_shapes(str(tmp_path / "garbage.ckpt"), {}, 600)


# ------------------------------------------------------------------ predict: descriptions and streaming
def test_a_description_of_another_model_is_one_line(small_ir, tmp_path):
    xml = copy_ir(small_ir, tmp_path / "ir")
    description = json.loads((small_ir / "ir.json").read_text())
    cases = [
        ({**description, "labels": ["a", "b"]}, "describes another model: 2 labels, .* gives 3 outputs"),
        ({**description, "preprocessing": {**description["preprocessing"], "input_size": 224}},
         "describes another model: it says 224x224 input images, .* takes \\[1, 8, 8, 3\\]"),
        ({"labels": ["a"]}, "no preprocessing contract"),
        ([1, 2, 3], "no list of labels"),
    ]
    for edited, message in cases:
        (tmp_path / "ir" / "ir.json").write_text(json.dumps(edited))
        with pytest.raises(PipelineError, match=message):
            predict_cli.load_model(str(xml))
    (tmp_path / "ir" / "ir.json").write_text("{not json")
    with pytest.raises(PipelineError, match="ir.json: not the model's JSON description"):
        predict_cli.load_model(str(xml))
    os.remove(tmp_path / "ir" / "ir.json")
    with pytest.raises(PipelineError, match=r"ir.json: missing \(the model's description"):
        predict_cli.load_model(str(xml))


def test_predict_reads_its_images_lazily_one_batch_ahead(small_ir):
    model, description = predict_cli.load_model(str(small_ir / "model.xml"))
    taken = []

    def paths():
        for number in range(10_000):
            taken.append(number)
            yield str(small_ir / "red.png")

    results = predict_cli.predict(model, description, paths(), batch_size=8)
    first = next(results)
    assert first["top"][0][0] == "red" and len(taken) == 8  # one batch read, not ten thousand
    for _ in range(20):
        next(results)
    assert len(taken) == 24


def test_predict_streams_rows_to_its_outputs(small_ir, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(40):
        Image.new("RGB", (8, 8), (0, 200, 0) if number % 2 else (200, 0, 0)).save(folder / f"{number:03d}.png")
    (folder / "broken.jpg").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    predict_cli.main(["--model", str(small_ir / "model.xml"), "--csv", "out.csv", "--json", "out.json", str(folder)])
    rows = atomic.read_table("out.csv")
    assert len(rows) == 40 * 3 + 1
    report = json.loads(open("out.json").read())
    assert report["images"] == 41 and report["unreadable"] == 1 and report["labels"] == ["red", "green", "blue"]
    assert [entry["label"] for entry in report["predictions"][:3]] == ["red", "green", "red"]
    assert report["predictions"][-1]["error"].startswith("cannot read the image")


def test_the_ir_converter_refuses_the_hostile_graph_before_openvino_reads_it(hostile_model, tmp_path):
    from scripts.model import backbone_ir
    atomic.write_json(tmp_path / "backbone.json", {"input_size": 8})
    with pytest.raises(PipelineError, match=r"refusing node 'WriteFile' \(op 'WriteFile'\)"):
        backbone_ir.convert(str(hostile_model / "model" / "frozen_model.pb"), str(tmp_path / "backbone.json"), "FP32",
                            str(tmp_path / "backbone.xml"))
    assert not (hostile_model / "sentinel.txt").exists()
    assert os.listdir(tmp_path) == ["backbone.json"]


def peak_rss_of_predict(model, folder, tmp_path):
    """Peak resident memory (MB) of a predict process over ``folder``, writing --csv and --json."""
    code = ("import resource, runpy, sys\n"
            f"sys.argv = [{os.path.join(REPO, 'scripts', 'predict.py')!r}] + sys.argv[1:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n    print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, "--model", str(model), "--csv", str(tmp_path / "o.csv"),
                             "--json", str(tmp_path / "o.json"), str(folder)], capture_output=True, text=True,
                            check=False, timeout=600)
    assert result.returncode == 0, result.stderr
    return float(result.stderr.strip().splitlines()[-1].split()[1])


@pytest.mark.slow
def test_predict_memory_does_not_grow_with_the_number_of_images(small_ir, tmp_path):
    rng = np.random.default_rng(0)
    peaks = {}
    for count in (200, 2000):
        folder = tmp_path / f"images{count}"
        folder.mkdir()
        for number in range(count):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{number:05d}.png")
        peaks[count] = peak_rss_of_predict(small_ir / "model.xml", folder, tmp_path)
    print(f"peak RSS of predict: {peaks}")
    assert peaks[2000] - peaks[200] < 3  # MB; ten times the images (before streaming: +6 MB)


def test_small_constants_that_broadcast_to_a_huge_tensor_are_refused_before_any_session(tmp_path):
    from scripts.core import inference, tfcompat
    tf = tfcompat.tf_v1()
    graph = tf.Graph()
    with graph.as_default():
        pixels = tf.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        column, row = tf.constant(np.zeros((100_000, 1), np.float32)), tf.constant(np.zeros((1, 100_000), np.float32))
        outer = tf.add(column, row, name="outer")  # 400 kB each; 40 GB together
        tf.nn.softmax(tf.reduce_mean(pixels, axis=[1, 2]) + tf.reduce_sum(outer), name="final_result")
    path = tmp_path / "model.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(PipelineError, match=r"model.pb: refusing node 'outer' \(op 'AddV2'\): its output of shape "
                                            r"\[100000, 100000\] holds more than"):
        inference.GraphModel(str(path), "input", "final_result")


def test_an_ir_port_of_a_huge_static_shape_is_refused(small_ir, tmp_path):
    text = (small_ir / "model.xml").read_text()
    edited = text.replace("<dim>8</dim>", "<dim>800000</dim>", 2)
    assert edited != text
    with pytest.raises(PipelineError, match=r"refusing layer 'input' \(type 'Parameter', version 'opset1'\): a port of "
                                            r"shape \[1, 800000, 800000, 3\]"):
        model_check.check_ir(str(copy_ir(small_ir, tmp_path / "ir", edited)))


def test_predict_never_opens_the_file_a_hostile_graph_reads(hostile_model, tmp_path):
    """The graph's output depends on ReadFile of a FIFO: had anything opened it, predict would hang."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    (tmp_path / "model").mkdir()
    script = f"""
import sys
sys.path.insert(0, {REPO!r})
import numpy as np
from scripts.core import atomic, tfcompat
tf = tfcompat.tf_v1()
graph = tf.Graph()
with graph.as_default():
    pixels = tf.placeholder(tf.float32, [None, 8, 8, 3], name="input")
    secret = tf.strings.length(tf.io.read_file({str(fifo)!r}))
    mean = tf.reduce_mean(pixels, axis=[1, 2]) + tf.cast(secret, tf.float32) * 0.0
    tf.nn.softmax(tf.matmul(mean, tf.constant(np.eye(3, dtype=np.float32))), name="final_result")
atomic.write_bytes("model/frozen_model.pb", graph.as_graph_def().SerializeToString())
"""
    built = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    (tmp_path / "model" / "model.json").write_text((hostile_model / "model" / "model.json").read_text())
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "predict.py"), "--model",
                             str(tmp_path / "model" / "frozen_model.pb"), str(hostile_model / "red.png")],
                            cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
    assert "refusing node 'ReadFile' (op 'ReadFile'): reads, writes or lists files" in one_error_line(result)
