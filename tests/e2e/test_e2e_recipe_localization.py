"""End to end: the localization recipe at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands).

The localiser's encoder transfers into the frozen-encoder segmentation and stays bit-identical there.
"""

from __future__ import annotations

import pytest
import torch

from support.tiny_recipes import test_tiny_recipe_runs_every_arm_and_writes_the_papers_table  # noqa: F401

pytestmark = pytest.mark.slow
RECIPE = "localization"


def test_tiny_localiser_encoder_transfers_frozen_into_the_segmentation(tiny_run):
    """Paper localization-pretraining: centre regression first, then the decoder on top of the frozen encoder."""
    from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
    from nnunet_transfer.transfer.weights import TransferReport

    workspace, _ = tiny_run
    results = workspace / "nnUNet_results"
    loc_fold = next(results.glob("Dataset995_*/LocalizationPretrainTrainer_recipe__nnUNetDemoPlans__3d_fullres/fold_0"))
    fold = next(results.glob("Dataset995_*/FrozenEncoderTrainer_locLocalisationpretrained_seed0__nnUNetDemoPlans_loc__"
                             "3d_fullres/fold_1"))
    report = TransferReport.load(fold / "transfer_report.json")
    assert report.unexpected and all(k.startswith("regressor.") for k in report.unexpected)
    assert all(k.startswith("decoder.") and not k.startswith("decoder.encoder.") for k in report.missing)
    source = read_checkpoint_file(loc_fold / "checkpoint_final.pth")["network_weights"]
    tuned = read_checkpoint_file(fold / "checkpoint_final.pth")["network_weights"]
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(torch.equal(tuned[k], source[k]) for k in encoder)
    scratch = next(results.glob("Dataset995_*/FrozenEncoderTrainer_locScratch_seed0__nnUNetDemoPlans__3d_fullres/fold_1"))
    assert not (scratch / "transfer_report.json").exists()
