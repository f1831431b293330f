"""The one place that makes TF-Slim importable under TensorFlow 2.21.

TF-Slim's layers import ``tf_keras.legacy_tf_layers.*``; tf-keras 2.21 ships those
modules only as ``tf_keras.src.legacy_tf_layers.*``. We alias them in ``sys.modules``
before TF-Slim is imported. Every module that needs TensorFlow in graph mode or
TF-Slim imports it from here.
"""
import importlib
import sys

from scripts.core import quiet

_LEGACY_LAYERS = ("base", "convolutional", "core", "normalization", "pooling",
                  "variable_scope_shim", "migration_utils")


def _alias_legacy_tf_layers():
    package = importlib.import_module("tf_keras.src.legacy_tf_layers")
    sys.modules.setdefault("tf_keras.legacy_tf_layers", package)
    for name in _LEGACY_LAYERS:
        module = importlib.import_module(f"tf_keras.src.legacy_tf_layers.{name}")
        sys.modules.setdefault(f"tf_keras.legacy_tf_layers.{name}", module)


def tf_v1():
    """TensorFlow's v1 API with eager execution off (graph mode)."""
    quiet.import_tensorflow()  # without its start-up noise (scripts/core/quiet.py)
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    return tf


def tf_slim():
    """The ``tf_slim`` package, importable after the alias above."""
    quiet.import_tensorflow()
    _alias_legacy_tf_layers()
    import tf_slim as slim
    return slim


def inception_v3_module():
    """``tf_slim.nets.inception_v3``."""
    tf_slim()
    from tf_slim.nets import inception_v3
    return inception_v3
