"""Serving: the model repository OVMS and KServe load, the built-in-preprocessing IR, a KServe
ModelServer for the deployed IR (``python -m scripts.serve``) and MLflow tracking."""
