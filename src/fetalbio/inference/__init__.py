"""Exported models: the model file, prediction on new images, export (final stage), benchmarks."""
