"""End to end with the real ``nnUNetv2_train``: resuming a fine-tuning with ``--c`` says that the weights now come
from the run's own checkpoint before it repeats the transfer report of the run's start."""

from __future__ import annotations

import pytest

from nnunet_transfer.workspace import trainer_variant_source
from support.mots_run import MOTS_ID

pytestmark = pytest.mark.slow

SHORT = "FineTuneTrainer_resumeReport"


def test_resume_says_the_weights_come_from_the_checkpoint(mots_pretrained):
    ws = mots_pretrained["workspace"]
    ws.write_trainers("resume_report", [trainer_variant_source(SHORT, "FineTuneTrainer", final_validation=False)])
    first = ws.train(MOTS_ID, "3d_fullres", "0", SHORT, "-pretrained_weights", str(mots_pretrained["checkpoint"]))
    assert "Pretrained weights:" in first and "Resumed with --c" not in first
    resumed = ws.train(MOTS_ID, "3d_fullres", "0", SHORT, "--c")
    assert "Resumed with --c: the weights now come from checkpoint_final.pth" in resumed
    assert resumed.index("Resumed with --c") < resumed.index("What the pretrained weights gave at the run's start")
