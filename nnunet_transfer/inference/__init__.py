"""Inference beyond ``nnUNetv2_predict``: per-task outputs of the MOTS network."""
