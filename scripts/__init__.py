"""The pipeline's stages as importable modules; each has a `python -m scripts.<stage>` entry point."""




