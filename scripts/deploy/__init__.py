"""Deployment stages: deployed IRs, their evaluation, benchmarks."""
