"""Data stages: download, extract, synthetic images, structure, split, TFRecord shards."""
