"""What the processor that ran a model can do, recorded beside every accuracy and speed figure.

INT8 accuracy and speed depend on the instruction set: without VNNI (AVX2 machines)
8-bit kernels sum products in 16 bits and can saturate (docs/int8.md). OpenVINO's CPU
plugin is built on oneDNN, which honours ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2``): the
cap is recorded too, and the kernels a compiled model really uses show it.
"""
import os

# /proc/cpuinfo flags that decide which kernels oneDNN can pick, lowest first.
ISA_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_bf16", "amx_int8")
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN caps below every 8-bit dot-product instruction (its others include VNNI or AMX).
CAPS_WITHOUT_VNNI = ("SSE41", "AVX", "AVX2", "AVX512_CORE")
# Runtime layer types whose kernel names say which instruction set computes them.
KERNEL_LAYERS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")


def proc_cpuinfo(path="/proc/cpuinfo"):
    """(model name, set of flags) of the first processor; (None, set()) where there is no such file."""
    name, flags = None, set()
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if name is not None and flags:
                    break
    except OSError:
        pass
    return name, flags


def isa_cap():
    """The oneDNN instruction-set cap set in this process's environment, or None."""
    return next((os.environ[name] for name in ISA_CAP_VARIABLES if os.environ.get(name)), None)


def compiled_kernels(compiled):
    """Sorted kernel names (e.g. brgconv_avx512_I8, jit_avx2_I8) of a compiled model's compute layers."""
    kernels = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in KERNEL_LAYERS:
            kernels.add(info["primitiveType"].astype(str))
    return sorted(kernels)


def description(compiled=None, inference_precision=None):
    """The CPU facts of this process, plus the compiled model's precision and kernels when given.

    {"model_name", "isa_flags": [...], "vnni": bool, "isa_cap": str|None,
     "openvino_capabilities": [...], "inference_precision": str|None, "kernels": [...]}
    ``vnni``: the processor has 8-bit dot-product instructions and no cap hides them.
    """
    import openvino as ov
    name, flags = proc_cpuinfo()
    core = ov.Core()
    cap = isa_cap()
    present = [flag for flag in ISA_FLAGS if flag in flags]
    result = {
        "model_name": name or core.get_property("CPU", "FULL_DEVICE_NAME"),
        "full_device_name": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "isa_flags": present,
        "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags) and (cap or "ALL").upper() not in CAPS_WITHOUT_VNNI,
        "isa_cap": cap,
        "openvino_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
        "inference_precision": inference_precision,
        "kernels": [],
    }
    if compiled is not None:
        result["inference_precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        result["kernels"] = compiled_kernels(compiled)
    return result


def summary(facts):
    """One line: 'AMD EPYC, avx2+avx512_vnni (cap AVX2), f32, kernels jit_avx2_I8'."""
    isa = "+".join(flag for flag in facts["isa_flags"] if flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                  "amx_int8")) or "no AVX2"
    cap = f" (cap {facts['isa_cap']})" if facts["isa_cap"] else ""
    kernels = f", kernels {' '.join(facts['kernels'])}" if facts["kernels"] else ""
    return f"{facts['model_name']}, {isa}{cap}, {facts['inference_precision']}{kernels}"
