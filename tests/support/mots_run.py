"""Names of the session's tiny MOTS pretraining run (the ``mots_workspace`` / ``mots_pretrained`` fixtures in
``tests/e2e/conftest.py``), for the end-to-end tests that call nnU-Net's commands on it."""

MOTS_ID = 600
MOTS_NAME = "Dataset600_MOTS"
MOTS_SHAPE = ("16", "48", "48")
TINY_MOTS = "MOTSPretrainTrainer_tiny"
