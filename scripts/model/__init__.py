"""Model stages: backbone, backbone IRs, features, heads, fine-tuning, selection, freezing."""
