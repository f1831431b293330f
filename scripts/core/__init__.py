"""The shared library: file formats, running models, the one decode and preprocessing, the model contract."""
