"""End to end (2D): Kvasir-SEG layout -> nnU-Net 2d -> AttentionUNetTrainer from a gate-free 1-channel U-Net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nnunet_transfer.architectures.attention_unet import GATE_KEY_PREFIX
from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

from support.files import input_folder

pytestmark = pytest.mark.slow

KVASIR_ID, KVASIR_NAME = 604, "Dataset604_KvasirSEG"
TINY_ATTENTION = "AttentionUNetTrainer_tiny"


@pytest.fixture(scope="module")
def kvasir(tmp_path_factory) -> NnUNetWorkspace:
    ws = NnUNetWorkspace(tmp_path_factory.mktemp("kvasir_ws"))
    ws.cli("synth", "kvasir", ws.root / "Kvasir-SEG", "--cases", "8", "--shape", "64", "64")
    ws.cli("convert", "kvasir", ws.root / "Kvasir-SEG", "-d", KVASIR_ID)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", KVASIR_ID, "-c", "2d", "-np", "2")
    ws.write_trainers("tiny_attention", [trainer_variant_source(
        TINY_ATTENTION, "AttentionUNetTrainer", epochs=2,
        body="reduce_lr_on_plateau = True\nearly_stopping_patience = 5")])
    return ws


def _gate_free_grayscale_checkpoint(ws: NnUNetWorkspace, path) -> dict:
    """A plain U-Net 'pretrained on another modality': 1 input channel, other classes, nnU-Net checkpoint format."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((ws.preprocessed / KVASIR_NAME / "nnUNetPlans.json").read_text()))
    cfg = plans.get_configuration("2d")
    torch.manual_seed(7)
    net = get_network_from_plans(cfg.network_arch_class_name, cfg.network_arch_init_kwargs,
                                 cfg.network_arch_init_kwargs_req_import, 1, 5, deep_supervision=True)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer"}, path)
    return net.state_dict()


def test_attention_unet_finetunes_from_gate_free_grayscale_unet(kvasir, tmp_path):
    ws = kvasir
    checkpoint = ws.root / "brain_mri_unet.pth"
    source = _gate_free_grayscale_checkpoint(ws, checkpoint)

    # -pretrained_weights cannot take it (no gates, 1 channel): the plans record can
    ws.cli("set-pretrained", checkpoint, "-d", KVASIR_ID, "-c", "2d")
    check = ws.cli("transfer-check", "-d", KVASIR_ID, "-c", "2d", "-tr", TINY_ATTENTION)
    assert "path: plans record" in check and "input channels 1 -> 3" in check

    log = ws.train(KVASIR_ID, "2d", "0", TINY_ATTENTION)
    assert "Pretrained weights:" in log
    fold = ws.model_folder(KVASIR_NAME, TINY_ATTENTION, "2d") / "fold_0"
    report = TransferReport.load(fold / "transfer_report.json")
    assert report.n_missing == 0 and report.n_shape_mismatched == 0
    new = [k for k in report.reinitialised if ".seg_layers." not in k]
    assert new and all(k.startswith(GATE_KEY_PREFIX) for k in new)
    assert [k for k, _ in report.adapted] == ["encoder.stages.0.0.convs.0.conv.weight"]
    assert set(report.loaded) == {k for k in source if ".seg_layers." not in k}

    images = sorted((ws.raw / KVASIR_NAME / "imagesTr").glob("*_0000.png"))[:2]
    inp, out = input_folder(images, tmp_path / "in"), tmp_path / "out"
    ws.predict(inp, out, KVASIR_ID, "2d", TINY_ATTENTION, ["0"])
    for f in images:
        pred = np.asarray(Image.open(out / f.name.replace("_0000.png", ".png")))
        assert pred.shape == np.asarray(Image.open(f)).shape[:2]
        assert set(np.unique(pred).tolist()) <= {0, 1}
