"""The CPU facts (scripts/core/cpu.py) and the instruction-set cap that emulates an AVX2-only CPU.

oneDNN, under OpenVINO's CPU plugin, reads ONEDNN_MAX_CPU_ISA when a process starts: with
``AVX2`` a VNNI machine runs the 8-bit kernels an AVX2-only processor runs (jit_avx2_I8),
which is how bench/bench_int8_isa.py and the slow INT8 test measure INT8 on "another CPU".
"""
import json
import os
import subprocess
import sys

import pytest

from scripts.core import cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small INT8 convolution stack: FakeQuantize on activations and weights, as NNCF writes them.
PROBE = """
import json, sys
import numpy as np
import openvino as ov
from openvino import opset13 as ops
from scripts.core import cpu

def fake_quantize(node, low, high, levels=256):
    bounds = [ops.constant(np.array(value, np.float32)) for value in (low, high, low, high)]
    return ops.fake_quantize(node, *bounds, levels)

rng = np.random.default_rng(0)
x = ops.parameter([1, 16, 32, 32], np.float32, name="x")
node = x
for index in range(2):
    weights = fake_quantize(ops.constant(rng.normal(0, 0.1, (16, 16, 3, 3)).astype(np.float32)), -0.5, 0.5, 255)
    node = ops.relu(ops.convolution(fake_quantize(node, 0.0, 4.0), weights, [1, 1], [1, 1], [1, 1], [1, 1]))
core = ov.Core()
compiled = core.compile_model(ov.Model([node], [x]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
print(json.dumps(cpu.description(compiled)))
"""


def facts_in_fresh_process(**environment):
    env = {key: value for key, value in os.environ.items() if key not in cpu.ISA_CAP_VARIABLES}
    env.update(environment, PYTHONPATH=REPO)
    output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True,
                            timeout=120).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_proc_cpuinfo_is_read_and_a_missing_file_gives_no_flags(tmp_path):
    name, flags = cpu.proc_cpuinfo()
    assert name and "sse2" in flags
    assert cpu.proc_cpuinfo(str(tmp_path / "missing")) == (None, set())


def test_the_description_names_the_model_the_flags_and_the_compiled_precision():
    facts = facts_in_fresh_process()
    assert facts["inference_precision"] == "f32" and facts["isa_cap"] is None
    assert facts["kernels"] and all(kernel.endswith("_I8") for kernel in facts["kernels"])
    assert set(facts["isa_flags"]) <= set(cpu.ISA_FLAGS) and facts["model_name"]
    assert "INT8" in facts["openvino_capabilities"]
    assert cpu.summary(facts).startswith(facts["model_name"])


@pytest.mark.skipif("avx512f" not in cpu.proc_cpuinfo()[1], reason="needs an AVX-512 CPU to cap down to AVX2")
def test_the_onednn_cap_makes_openvino_pick_the_avx2_int8_kernels():
    native, capped = facts_in_fresh_process(), facts_in_fresh_process(ONEDNN_MAX_CPU_ISA="AVX2")
    assert not any("avx2" in kernel for kernel in native["kernels"])
    assert capped["kernels"] and all(kernel.startswith("jit_avx2") for kernel in capped["kernels"])
    assert capped["isa_cap"] == "AVX2" and capped["vnni"] is False
    assert native["vnni"] == ("avx512_vnni" in native["isa_flags"])

