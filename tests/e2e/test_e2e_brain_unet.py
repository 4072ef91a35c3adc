"""End to end (2D): the attention paper's setting. Kvasir-SEG layout converted with its preprocessing (256 x 256,
[0, 1] channels) -> nnU-Net 2d plans -> the brain U-Net release file (``unet.pt`` layout, random values) as the
plans' record -> AttentionUNetTrainer_brainUNet trains, reports per tensor, and nnUNetv2_predict builds it again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

from support.brain_unet_release import release_state_dict
from support.files import input_folder

pytestmark = pytest.mark.slow

KVASIR_ID, KVASIR_NAME = 608, "Dataset608_KvasirSEG"
TINY = "AttentionUNetTrainer_brainUNet_tiny"


def test_brain_unet_release_weights_fine_tune_and_predict(tmp_path):
    ws = NnUNetWorkspace(tmp_path / "ws")
    ws.cli("synth", "kvasir", ws.root / "Kvasir-SEG", "--cases", "6", "--shape", "48", "64")
    ws.cli("convert", "kvasir", ws.root / "Kvasir-SEG", "-d", KVASIR_ID, "--image-preprocessing", "attention-paper")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", KVASIR_ID, "-c", "2d", "-np", "2")
    ws.write_trainers("tiny_brain_unet", [trainer_variant_source(TINY, "AttentionUNetTrainer_brainUNet")])
    release = release_state_dict(seed=3)
    checkpoint = ws.root / "unet.pt"
    torch.save(release, checkpoint)

    ws.cli("set-pretrained", checkpoint, "-d", KVASIR_ID, "-c", "2d", "--exclude", "conv.weight", "conv.bias")
    log = ws.train(KVASIR_ID, "2d", "0", TINY)
    assert "Pretrained weights:" in log
    fold = ws.model_folder(KVASIR_NAME, TINY, "2d") / "fold_0"
    report = TransferReport.load(fold / "transfer_report.json")
    assert report.fraction_loaded >= 0.95 and report.n_missing == 0 and report.n_shape_mismatched == 0
    assert set(report.loaded) == {k for k in release if k not in ("conv.weight", "conv.bias")}
    assert {"conv.weight", "conv.bias"} <= set(report.reinitialised)
    assert all(k.startswith("attention_gates.") for k in report.reinitialised if not k.startswith("conv."))

    images = sorted((ws.raw / KVASIR_NAME / "imagesTr").glob("*_0000.png"))[:1]
    assert np.asarray(Image.open(images[0])).shape == (256, 256, 3)
    inp, out = input_folder(images, tmp_path / "in"), tmp_path / "out"
    ws.predict(inp, out, KVASIR_ID, "2d", TINY, ["0"])
    pred = np.asarray(Image.open(out / images[0].name.replace("_0000.png", ".png")))
    assert pred.shape == (256, 256) and set(np.unique(pred).tolist()) <= {0, 1}
