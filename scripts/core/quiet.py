"""Quiet jobs: TensorFlow's start-up noise kept out of logs and the console.

Two sources, two remedies:

- TensorFlow's C++ logging (``E0000 ... failed call to cuInit``, the CPU-feature and MLIR
  notices) obeys ``TF_CPP_MIN_LOG_LEVEL``, read when TensorFlow's core first logs. It is
  set in every job's environment before Python starts: the Snakefile exports
  ``shell_exports()`` in its ``shell.prefix``; ``import_tensorflow`` sets it too for
  processes started otherwise (``predict``, tests).
- A few lines are written while TensorFlow's shared libraries load, before Abseil's
  logging is initialised, and Abseil then writes every message to stderr whatever the
  level ("WARNING: All log messages before absl::InitializeLog() ...", ``I0000 ...
  port.cc ... oneDNN custom operations are on``, ``cudart_stub.cc ... Could not find cuda
  drivers``). No setting reaches them, so ``import_tensorflow`` imports TensorFlow with
  file descriptor 2 pointed at a temporary file and passes on what is not such a line.

A third: TF-Slim's layers call Keras's deprecated ``layer.apply``, and every process that
builds them warns about it (a Python UserWarning); ``import_tensorflow`` ignores that one
warning, since the call is TF-Slim's, not ours.

Everything else, warnings and errors included, still reaches stderr.
"""
import contextlib
import os
import re
import shlex
import sys
import tempfile
import warnings

# 3: C++ errors too; TensorFlow raises the ones that matter as Python exceptions, and
# on a machine without a GPU the only C++ error is "failed call to cuInit".
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}

# Lines written while the libraries load: Abseil's warning, and C++ INFO lines (I + date).
LOAD_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\.cc:\d+\] .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*)$")

# Deprecation warnings of calls made inside our dependencies, not by our code.
IGNORED_WARNINGS = (r"`layer\.apply` is deprecated",)  # TF-Slim's layers (tf_keras legacy layers)

# What a TensorFlow process must not print (the test of this module checks stderr with it).
NOISE = re.compile(LOAD_NOISE.pattern + r"|^[EW]\d{4} \d\d:\d\d:\d+\.\d+ .*$", re.MULTILINE)


def shell_exports():
    """``export NAME=value; ...`` of ENVIRONMENT, for a shell prefix."""
    return "".join(f"export {name}={shlex.quote(value)}; " for name, value in sorted(ENVIRONMENT.items()))


def environment(base=None):
    """A copy of ``base`` (default: os.environ) with ENVIRONMENT set, for subprocesses."""
    return {**(os.environ if base is None else base), **ENVIRONMENT}


@contextlib.contextmanager
def native_stderr_filtered(pattern=LOAD_NOISE):
    """Within the block, lines written to file descriptor 2 that match ``pattern`` are dropped.

    The rest is written to stderr when the block ends, in order. Python's own writes to
    sys.stderr inside the block go the same way.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not pattern.match(line.rstrip("\n"))]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow():
    """``import tensorflow`` without its start-up noise; the module."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # read at TensorFlow's first log, after this
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    if "tensorflow" not in sys.modules:
        with native_stderr_filtered():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]
