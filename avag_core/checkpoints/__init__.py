"""Weights on disk: the named presets and the model built from them, our checkpoints, pretrained encoder files,
and checkpoints of the authors' released code."""
