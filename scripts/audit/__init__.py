"""Audit stages: near-duplicates across splits (leakage) and suspected label errors."""
