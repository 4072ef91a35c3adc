"""The nnU-Net-family releases in their released formats load their backbone into their own architecture.

Fixtures follow the official definitions (key names, wrapping, file layout) with random weights made at test time
and, for speed, narrower layers (key names depend on stages, blocks and depth, which are the released ones):

- nnssl / OpenMind ResEnc-L: nnssl's ``ResEncL`` (6 stages, blocks 1-3-4-6-6-6, decoder 1 conv per stage; released
  widths 32-64-128-256-320-320, here a quarter) saved by nnssl's trainer (``network_weights`` +
  ``nnssl_adaptation_plan``, key_to_encoder ``encoder.stages``, key_to_stem ``encoder.stem``);
- nnssl / OpenMind Primus-M: dynamic-network-architectures' Primus with Primus-M's 16 blocks (embedding 864,
  here 48) and 8x8x8 patch embedding, nnssl's plan (key_to_encoder ``eva``, key_to_stem ``down_projection``,
  key_to_lpe ``eva.pos_embed``);
- TotalSegmentator v2: ``Dataset291_TotalSegmentator_part1_organs_1559subj.zip`` holding
  ``Dataset291_.../nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres/{plans.json, dataset.json, fold_0/...}``;
- MultiTalent: an nnU-Net v2 results folder (plans.json + fold_all) of a ResEnc U-Net;
- VoComni: ``VoComni_nnunet.pt``, the bare state dict of an nnU-Net v2 PlainConvUNet (VoCo's conversion script saves
  ``model.state_dict()`` of the nnU-Net checkpoint).

Each test builds the fine-tuning network from the source's own architecture (other classes, and for ResEnc-L two
input channels), loads through the one transfer path and checks the per-tensor report: at least 95 % of the backbone
tensors are loaded or adapted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.transfer.weights import transfer_weights
from nnunet_transfer.transfer.zoo_verify import verify_file
from support.nnunet_family import write_results_folder, write_v2_checkpoint, zip_results_folder

RESENC_L_BLOCKS = [1, 3, 4, 6, 6, 6]
RESENC_L_WIDTHS = [8, 16, 32, 64, 80, 80]  # a quarter of the released 32-64-128-256-320-320


def _resenc_l(input_channels: int = 1, num_classes: int = 1) -> ResidualEncoderUNet:
    return ResidualEncoderUNet(input_channels, 6, RESENC_L_WIDTHS, nn.Conv3d, 3, [1, 2, 2, 2, 2, 2], RESENC_L_BLOCKS,
                               num_classes, [1] * 5, True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None,
                               None, nn.LeakyReLU, {"inplace": True}, deep_supervision=True)


def _plain_unet(num_classes: int) -> PlainConvUNet:
    return PlainConvUNet(1, 4, [8, 16, 32, 32], nn.Conv3d, 3, [1, 2, 2, 2], 2, num_classes, 2, True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=True)


def _backbone_fraction(report, keys) -> float:
    status = report.tensor_status()
    return sum(status.get(k, {}).get("status") in ("loaded", "adapted") for k in keys) / len(keys)


def _nnssl_plan(arch: str, key_to_encoder: str, key_to_stem: str, in_proj, lpe, patch) -> dict:
    return {"architecture_plans": {"arch_class_name": arch, "arch_kwargs": {}, "arch_kwargs_requiring_import": []},
            "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                              "configurations": {"onemmiso": {"spacing": [1, 1, 1], "patch_size": list(patch)}}},
            "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": list(patch),
            "key_to_encoder": key_to_encoder, "key_to_stem": key_to_stem, "keys_to_in_proj": list(in_proj),
            "key_to_lpe": lpe}


def test_openmind_resenc_l_loads_its_encoder_into_a_two_channel_resenc_l(tmp_path):
    torch.manual_seed(0)
    source = _resenc_l()
    plan = _nnssl_plan("ResEncL", "encoder.stages", "encoder.stem",
                       ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"], None, (160, 160, 160))
    path = write_v2_checkpoint(tmp_path / "ResEncL-OpenMind-MAE" / "checkpoint_final.pth", source,
                               trainer_name="BaseMAETrainer", extra={"nnssl_adaptation_plan": plan},
                               drop=("inference_allowed_mirroring_axes",))
    assert verify_file(path, "openmind-resencl-mae").ok
    target = _resenc_l(input_channels=2, num_classes=4)
    report = transfer_weights(target, path)
    backbone = [k for k in target.state_dict() if k.startswith("encoder.")]
    assert _backbone_fraction(report, backbone) == 1.0
    assert "input channels 1 -> 2" in dict(report.adapted)["encoder.stem.convs.0.conv.weight"]
    # the pretext decoder is skipped (not offered), never loaded
    assert not any(k.startswith("decoder.") and not k.startswith("decoder.encoder.") for k in report.loaded)
    assert any(k.startswith("decoder.") for k in report.skipped)


def test_openmind_primus_m_loads_into_primus_m_planned_for_another_patch(tmp_path):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_transfer.architectures.primus_m import PRIMUS_M_CLASS_NAME

    def primus(patch):  # Primus-M's 16 blocks at a test-size embedding
        return get_network_from_plans(PRIMUS_M_CLASS_NAME, {"input_shape": patch, "embed_dim": 48,
                                                            "eva_numheads": 2}, [], 1, 2, deep_supervision=False)

    torch.manual_seed(0)
    source = primus([32, 32, 32])
    plan = _nnssl_plan("PrimusM", "eva", "down_projection", ["down_projection.proj"], "eva.pos_embed", (32, 32, 32))
    path = write_v2_checkpoint(tmp_path / "PrimusM-OpenMind-MAE" / "checkpoint_final.pth", source,
                               trainer_name="BaseMAETrainer", extra={"nnssl_adaptation_plan": plan})
    assert verify_file(path, "openmind-primusm-vf").ok
    target = primus([32, 48, 32])
    report = transfer_weights(target, path)
    backbone = [k for k in target.state_dict() if k.startswith(("eva.", "down_projection."))]
    assert len([k for k in backbone if k.startswith("eva.blocks.15.")]) > 0  # Primus-M's depth
    assert _backbone_fraction(report, backbone) == 1.0
    assert "token grid [4, 4, 4] -> [4, 6, 4]" in dict(report.adapted)["eva.pos_embed"]


def _plans_for(network_class: str, arch_kwargs: dict) -> dict:
    return {"dataset_name": "Dataset291_TotalSegmentator_part1_organs_1559subj", "plans_name": "nnUNetPlans",
            "configurations": {"3d_fullres": {"patch_size": [32, 32, 32], "spacing": [1.5, 1.5, 1.5],
                                              "normalization_schemes": ["CTNormalization"],
                                              "architecture": {"network_class_name": network_class,
                                                               "arch_kwargs": arch_kwargs,
                                                               "_kw_requires_import": []}}},
            "foreground_intensity_properties_per_channel": {"0": {"mean": 50.0, "std": 200.0,
                                                                  "percentile_00_5": -1000.0,
                                                                  "percentile_99_5": 1500.0}}}


def test_totalsegmentator_zip_loads_its_unet_except_the_head(tmp_path):
    torch.manual_seed(0)
    source = _plain_unet(num_classes=25)  # task 291: 24 organs + background
    results = tmp_path / "results"
    model = "Dataset291_TotalSegmentator_part1_organs_1559subj/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
    folder = write_results_folder(results, source, _plans_for("PlainConvUNet", {}), model=model)
    archive = zip_results_folder(results, folder, tmp_path / "Dataset291_TotalSegmentator_part1_organs_1559subj.zip")
    assert verify_file(archive).ok  # found by its released file name
    target = _plain_unet(num_classes=3)
    report = transfer_weights(target, archive)
    backbone = [k for k in target.state_dict() if ".seg_layers." not in k]
    assert _backbone_fraction(report, backbone) >= 0.95
    assert all(s["status"] == "new" for k, s in report.tensor_status().items() if ".seg_layers." in k)


def test_multitalent_results_folder_loads_its_resenc_unet(tmp_path):
    torch.manual_seed(0)
    source = _resenc_l(num_classes=9)
    results = tmp_path / "results"
    folder = write_results_folder(results, source, _plans_for("ResidualEncoderUNet", {}), folds=("all",),
                                  model="Dataset100_MultiTalent/MultiTalent_Trainer__nnUNetResEncUNetLPlans__"
                                        "3d_fullres")
    assert verify_file(folder, "multitalent").ok
    report = transfer_weights(_resenc_l(num_classes=2), folder)
    backbone = [k for k in source.state_dict() if ".seg_layers." not in k]
    assert _backbone_fraction(report, backbone) >= 0.95


def test_vocomni_nnunet_checkpoint_loads_its_plain_unet(tmp_path):
    torch.manual_seed(0)
    source = _plain_unet(num_classes=21)  # 20 VoComni classes + background
    path = tmp_path / "VoComni_nnunet.pt"
    torch.save(source.state_dict(), path)  # VoCo's conversion script: torch.save(model.state_dict(), ...)
    assert verify_file(path).ok
    report = transfer_weights(_plain_unet(num_classes=5), path)
    backbone = [k for k in source.state_dict() if ".seg_layers." not in k]
    assert _backbone_fraction(report, backbone) >= 0.95
