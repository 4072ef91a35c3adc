"""Checkpoints of the nnU-Net family (v1 .model, v2 results folders and zips, nnssl) load as data and transfer."""

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.encoder_export import encoder_state_dict
from nnunet_transfer.transfer.weights import nnunet_pretrained_weights_report, transfer_weights
from support.nnunet_family import (generic_unet_v1_state_dict, resenc_unet, v1_plans, v2_plans, write_nnssl_checkpoint,
                                   write_results_folder, write_v1_model, zip_results_folder)

POOL = [[1, 2, 2], [2, 2, 2]]
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]


def _plain(features, kernels, strides, classes=3, deep_supervision=False, n_conv=2):
    return PlainConvUNet(1, len(features), list(features), nn.Conv3d, kernels, strides, n_conv, classes, n_conv, True,
                         nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                         {"inplace": True}, deep_supervision=deep_supervision)


def _v1_forward(state, x, pool, kernels, num_conv=2):
    """nnU-Net v1 Generic_UNet.forward (nnUNetTrainerV2 settings) evaluated on the v1 state dict."""
    def block(prefix, x, kernel, stride=1):
        padding = [1 if k == 3 else 0 for k in kernel]
        x = F.conv3d(x, state[f"{prefix}.conv.weight"], state[f"{prefix}.conv.bias"], stride, padding)
        x = F.instance_norm(x, weight=state[f"{prefix}.instnorm.weight"], bias=state[f"{prefix}.instnorm.bias"],
                            eps=1e-5)
        return F.leaky_relu(x, 1e-2)

    skips = []
    for d in range(len(pool)):
        for c in range(num_conv):
            stride = pool[d - 1] if (d > 0 and c == 0) else 1  # convolutional pooling
            x = block(f"conv_blocks_context.{d}.blocks.{c}", x, kernels[d], stride)
        skips.append(x)
    n = len(pool)
    for c in range(num_conv - 1):
        x = block(f"conv_blocks_context.{n}.0.blocks.{c}", x, kernels[n], pool[-1] if c == 0 else 1)
    x = block(f"conv_blocks_context.{n}.1.blocks.0", x, kernels[n])
    for u in range(n):
        x = F.conv_transpose3d(x, state[f"tu.{u}.weight"], None, pool[-(u + 1)])
        x = torch.cat((x, skips[-(u + 1)]), 1)
        for c in range(num_conv - 1):
            x = block(f"conv_blocks_localization.{u}.0.blocks.{c}", x, kernels[-(u + 1)])
        x = block(f"conv_blocks_localization.{u}.1.blocks.0", x, kernels[-(u + 1)])
    return F.conv3d(x, state[f"seg_outputs.{n - 1}.weight"])


@torch.no_grad()
def test_v1_generic_unet_checkpoint_maps_onto_plain_conv_unet_with_the_same_output(tmp_path):
    kernels = [[3, 3, 3]] * 3  # v1 decoder stages use the kernel of the stage below, v2 their own: keep them equal
    state = generic_unet_v1_state_dict(1, 8, 3, POOL, kernels)
    fname = write_v1_model(tmp_path / "fold_0", state, v1_plans(POOL, kernels, [8, 32, 32], [3.0, 0.8, 0.8]))
    source = read_source_weights(fname)
    assert source.format == "nnunet_v1" and source.plans["plans_per_stage"][0]["conv_kernel_sizes"] == kernels
    assert any("patch size [8, 32, 32]" in n for n in source.notes)
    v2 = _plain([8, 16, 32], kernels, [[1, 1, 1]] + POOL)
    report = transfer_weights(v2, fname, exclude=())
    assert report.n_shape_mismatched == 0 and report.n_unexpected == 0 and not report.adapted
    # v1 has no bias on tu and seg_outputs: those v2 biases are the only new tensors (nnU-Net initialises them to 0)
    assert sorted(report.missing) == [f"decoder.transpconvs.{u}.bias" for u in range(2)]
    assert sorted(report.reinitialised) == [f"decoder.seg_layers.{u}.bias" for u in range(2)]
    for key in report.missing + report.reinitialised:
        v2.state_dict()[key].zero_()
    x = torch.randn(1, 1, 8, 16, 16)
    torch.testing.assert_close(v2(x), _v1_forward(state, x, POOL, kernels), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="only nnU-Net v2 checkpoint files"):
        nnunet_pretrained_weights_report(_plain([8, 16, 32], kernels, [[1, 1, 1]] + POOL), fname)


@torch.no_grad()
def test_v1_checkpoint_transfers_into_other_v2_plans_and_exports_its_encoder(tmp_path):
    state = generic_unet_v1_state_dict(1, 8, 3, POOL, KERNELS)
    fname = write_v1_model(tmp_path, state, v1_plans(POOL, KERNELS, [8, 32, 32], [3.0, 0.8, 0.8]))
    same_plans = transfer_weights(_plain([8, 16, 32], KERNELS, [[1, 1, 1]] + POOL), fname)
    # the one architectural difference of v1: its full-resolution decoder stage has the kernel of stage 1
    assert {k for k, _ in same_plans.adapted} == {f"decoder.stages.1.convs.{c}.conv.weight" for c in range(2)}
    target = _plain([8, 16], [[3, 3, 3], [3, 3, 3]], [[1, 1, 1], [2, 2, 2]], deep_supervision=True)
    report = transfer_weights(target, fname)
    assert report.n_shape_mismatched == 0 and report.surplus
    assert "kernel [1, 3, 3] -> [3, 3, 3]" in dict(report.adapted)["encoder.stages.0.0.convs.0.conv.weight"]
    encoder = encoder_state_dict(fname)
    assert "encoder.stages.2.0.convs.1.conv.weight" in encoder and not any(k.startswith("conv_blocks") for k in encoder)


@torch.no_grad()
def test_v2_results_folder_and_zip_as_totalsegmentator_ships_them(tmp_path):
    torch.manual_seed(0)
    source_net = _plain([8, 16, 24], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], classes=2,
                        deep_supervision=True)
    results = tmp_path / "results"
    plans = v2_plans({"n_stages": 3, "kernel_sizes": [[3, 3, 3]] * 3}, [32, 32, 32], [1.5, 1.5, 1.5])
    folder = write_results_folder(results, source_net, plans, folds=("0", "1"))
    archive = zip_results_folder(results, folder, tmp_path / "Dataset777_TotalSeg.zip")
    for path in (results, folder, folder.parent, archive):
        source = read_source_weights(path)
        assert source.format == "nnunet_v2" and source.plans["plans_name"] == "nnUNetPlans"
        assert any("fold_0" in n for n in source.notes) and any("3 stages" in n for n in source.notes)
        assert torch.equal(source.tensors["encoder.stages.0.0.convs.0.conv.weight"],
                           source_net.state_dict()["encoder.stages.0.0.convs.0.conv.weight"])
    assert "fold_1" in read_source_weights(archive, fold="1").source
    with pytest.raises(FileNotFoundError, match="fold_3"):
        read_source_weights(folder, fold="3")
    # no fold_0 and several folds: the error names one fold's file, and that file brings the folder's plans
    others = write_results_folder(tmp_path / "others", source_net, plans, folds=("1", "2"))
    with pytest.raises(ValueError, match=r"fold_1/checkpoint_final\.pth"):
        read_source_weights(others)
    one_fold = read_source_weights(others / "fold_2" / "checkpoint_final.pth")
    assert one_fold.plans["plans_name"] == "nnUNetPlans" and any("3 stages" in n for n in one_fold.notes)
    target = _plain([8, 16], [[1, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2]], classes=5, deep_supervision=True)
    report = transfer_weights(target, archive)
    assert report.n_shape_mismatched == 0 and report.adapted and report.reinitialised
    assert any("source plans nnUNetPlans" in n for n in report.notes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no fold_X"):
        read_source_weights(tmp_path / "empty")
    assert read_source_weights(folder / "fold_1" / "checkpoint_final.pth").format == "nnunet_v2"


@torch.no_grad()
def test_nnssl_checkpoint_transfers_encoder_and_stem_only(tmp_path):
    torch.manual_seed(1)
    pretrained = resenc_unet()
    path = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", pretrained)
    source = read_source_weights(path)
    assert source.format == "nnssl" and source.filtered and all(k.startswith("decoder.") for k in source.filtered)
    assert all(k.startswith(("encoder.stages", "encoder.stem")) for k in source.tensors)
    target = resenc_unet(kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], num_classes=4)
    report = transfer_weights(target, path)
    assert report.n_shape_mismatched == 0 and "encoder.stem.convs.0.conv.weight" in dict(report.adapted)
    assert report.missing and all(k.startswith("decoder.") for k in report.missing)  # the decoder starts fresh
    assert any("nnssl checkpoint (ResidualEncoderUNet" in n for n in report.notes)
    assert set(report.skipped) >= set(source.filtered)
