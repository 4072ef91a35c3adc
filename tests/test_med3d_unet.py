"""Med3DUNet: nnU-Net builds it from plans, deep supervision lines up with nnU-Net's targets, weights load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.transfer.medicalnet import load_medicalnet
from nnunet_transfer.architectures.med3d_unet import (
    MED3D_UNET_CLASS_NAME,
    Med3DUNet,
    apply_med3d_plans_entry,
    deep_supervision_sizes,
    fit_spatial_size,
    med3d_plans_entry,
)

SMALL = dict(depth=10, decoder_features=(32, 32, 16, 16, 8), n_conv_per_stage_decoder=1)


def _nnunet_ds_target_shapes(patch_size, pool_op_kernel_sizes):
    """Deep-supervision target shapes exactly as nnU-Net computes them (scales + its downsampling transform)."""
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(pool_op_kernel_sizes), axis=0))[:-1]
    seg = torch.zeros((1, *patch_size), dtype=torch.int16)
    targets = DownsampleSegForDSTransform(ds_scales=scales)(segmentation=seg)["segmentation"]
    return [list(t.shape[1:]) for t in targets]


@pytest.mark.parametrize("patch", [(11, 27, 21), (16, 32, 24), (7, 19, 33)])
def test_deep_supervision_outputs_match_nnunet_targets_on_odd_anisotropic_patches(patch):
    torch.manual_seed(0)
    net = Med3DUNet(input_channels=2, num_classes=3, deep_supervision=True, **SMALL)
    x = torch.randn(1, 2, *patch)
    outs = net(x)
    expected = _nnunet_ds_target_shapes(patch, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    assert [list(o.shape[2:]) for o in outs] == expected  # highest resolution first
    assert list(outs[0].shape) == [1, 3, *patch]
    assert expected == deep_supervision_sizes(patch, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    sum(o.float().pow(2).mean() for o in outs).backward()
    assert net.encoder.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.decoder.parameters())


def test_deep_supervision_toggle_and_head_naming():
    net = Med3DUNet(input_channels=1, num_classes=2, deep_supervision=True, **SMALL)
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    with torch.no_grad():
        out = net(torch.randn(2, 1, 9, 14, 13))
    assert isinstance(out, torch.Tensor) and list(out.shape) == [2, 2, 9, 14, 13]
    keys = list(net.state_dict())
    heads = [k for k in keys if ".seg_layers." in f".{k}"]
    assert heads == [f"decoder.seg_layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    # nnU-Net's -pretrained_weights skips keys containing '.seg_layers.': the rest must be the whole network
    # except the heads, and the encoder part must be MedicalNet's keys under 'encoder.'
    enc_keys = [k[len("encoder."):] for k in keys if k.startswith("encoder.")]
    assert enc_keys == list(Med3DResNet(depth=10).state_dict())


def test_medicalnet_weights_load_into_the_unet_encoder():
    torch.manual_seed(3)
    src = Med3DResNet(depth=10)
    net = Med3DUNet(input_channels=4, num_classes=5, **SMALL)
    report = load_medicalnet(net.encoder, {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}})
    assert report.complete and report.adapted and report.adapted[0][0] == "conv1.weight"
    assert torch.equal(net.encoder.layer4[0].conv2.weight, src.layer4[0].conv2.weight)
    with torch.no_grad():
        assert list(net(torch.randn(1, 4, 16, 9, 12)).shape) == [1, 5, 16, 9, 12]


def test_nnunet_builds_it_from_plans_and_its_loss_trains_it():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    entry = med3d_plans_entry(10, patch_size=(20, 37, 29), spacing=(3.0, 0.8, 0.8),
                              decoder_features=(32, 32, 16, 16, 8), n_conv_per_stage_decoder=1)
    assert entry["patch_size"] == [16, 32, 24]
    config = apply_med3d_plans_entry({"patch_size": [20, 37, 29], "spacing": [3.0, 0.8, 0.8], "batch_size": 2,
                                      "architecture": {}}, entry)
    cm = ConfigurationManager(config)
    assert cm.network_arch_class_name == MED3D_UNET_CLASS_NAME
    assert [list(s) for s in cm.pool_op_kernel_sizes] == entry["pool_op_kernel_sizes"]
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 2, 3, allow_init=True,
                                 deep_supervision=True)
    assert isinstance(net, Med3DUNet) and isinstance(net.decoder.stages[0].convs[0].norm, torch.nn.InstanceNorm3d)

    patch = cm.patch_size
    outs = net(torch.randn(2, 2, *patch))
    target_shapes = _nnunet_ds_target_shapes(patch, cm.pool_op_kernel_sizes)
    assert [list(o.shape[2:]) for o in outs] == target_shapes
    targets = [torch.randint(0, 3, (2, 1, *s)).float() for s in target_shapes]
    weights = np.array([1 / (2 ** i) for i in range(len(target_shapes))])
    weights[-1] = 0
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, weight_ce=1, weight_dice=1,
                                                 dice_class=MemoryEfficientSoftDiceLoss), weights / weights.sum())
    value = loss(outs, targets)
    value.backward()
    assert torch.isfinite(value) and net.encoder.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_plans_entry_defaults_and_anisotropic_strides():
    entry = med3d_plans_entry(50, patch_size=(128, 128, 128))
    assert entry["arch_kwargs"]["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert entry["arch_kwargs"]["shortcut_type"] == "B" and entry["patch_size"] == [128, 128, 128]
    assert med3d_plans_entry(18, patch_size=(5, 9, 30))["patch_size"] == [8, 8, 24]
    assert med3d_plans_entry(18, (64, 64, 64))["arch_kwargs"]["shortcut_type"] == "A"

    aniso = med3d_plans_entry(10, patch_size=(20, 160, 160), spacing=(3.6, 0.6, 0.6), adapt_strides_to_spacing=True)
    strides = aniso["arch_kwargs"]["strides"]
    assert strides[1] == [1, 2, 2] and strides[2] == [1, 2, 2] and strides[3] == [2, 2, 2]
    assert aniso["patch_size"] == [20, 160, 160]
    net = Med3DUNet(1, 2, deep_supervision=True, strides=strides, decoder_features=(16, 16, 8, 8, 8),
                    n_conv_per_stage_decoder=1, depth=10)
    patch = [10, 24, 24]
    with torch.no_grad():
        outs = net(torch.randn(1, 1, *patch))
    assert [list(o.shape[2:]) for o in outs] == _nnunet_ds_target_shapes(patch, strides) == \
           [[10, 24, 24], [10, 12, 12], [10, 6, 6]]
    assert net.encoder.conv1.stride == (1, 2, 2)


def test_invalid_configuration_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="strides must be 4"):
        Med3DUNet(1, 2, depth=10, strides=[[2, 2, 2]] * 4)
    with pytest.raises(ValueError, match="decoder_features needs 5"):
        Med3DUNet(1, 2, depth=10, decoder_features=(32, 16))
    with pytest.raises(ImportError, match="decoder_norm_op"):
        Med3DUNet(1, 2, depth=10, decoder_norm_op="torch.nn.NoSuchNorm")
    with pytest.raises(ValueError, match="depth must be one of"):
        med3d_plans_entry(42, (64, 64, 64))


def test_fit_spatial_size_crops_and_pads_at_the_end():
    x = torch.arange(2 * 5 * 4 * 3, dtype=torch.float32).reshape(1, 2, 5, 4, 3)
    y = fit_spatial_size(x, [4, 5, 3])
    assert list(y.shape) == [1, 2, 4, 5, 3]
    assert torch.equal(y[:, :, :, :4], x[:, :, :4])  # cropped at the end, voxels stay aligned
    assert torch.equal(y[:, :, :, 4], x[:, :, :4, 3])  # padded by replicating the last voxel
    assert fit_spatial_size(x, [5, 4, 3]) is x
