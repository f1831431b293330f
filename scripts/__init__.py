"""The pipeline's stages as importable modules; each has a `python -m scripts.<stage>` entry point."""
import os

# Quiet TensorFlow's C++ start-up banner in every stage; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
