"""ResUNetASPP: shapes on anisotropic nnU-Net-style plans, deep supervision, weight transfer keys, memory count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_transfer.architectures.res_unet_aspp import (
    ASPP,
    DecoderResidualBlock,
    EncoderResidualBlock,
    ResUNetASPP,
)

# tiny, anisotropic, "odd" plans: in-plane-only kernels and strides first, a z-only stride at the bottleneck
KERNELS = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [1, 3, 3]]
STRIDES = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 1, 1]]
PATCH = (4, 16, 24)  # divisible by the cumulative strides (4, 8, 8), as nnU-Net's patch sizes always are


def arch_kwargs(**overrides) -> dict:
    kw = dict(n_stages=5, features_per_stage=[4, 6, 8, 10, 12], conv_op=nn.Conv3d, kernel_sizes=KERNELS,
              strides=STRIDES, n_blocks_per_stage=[1, 3, 4, 6, 3], n_conv_per_stage_decoder=[1, 1, 1, 1],
              conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
              dropout_op=None, dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    kw.update(overrides)
    return kw


def build(num_classes: int = 3, deep_supervision: bool = True, input_channels: int = 1, **overrides) -> ResUNetASPP:
    torch.manual_seed(0)
    net = ResUNetASPP(input_channels=input_channels, num_classes=num_classes, **arch_kwargs(**overrides),
                      deep_supervision=deep_supervision)
    net.apply(net.initialize)
    return net


def nnunet_ds_target_shapes(patch, pool_op_kernel_sizes):
    """What nnUNetTrainer._get_deep_supervision_scales + DownsampleSegForDSTransform produce for a patch."""
    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(pool_op_kernel_sizes), axis=0))[:-1]
    return [tuple(round(p * s) for p, s in zip(patch, scale)) for scale in scales]


def test_forward_backward_deep_supervision_matches_nnunet_targets():
    net = build(num_classes=3, input_channels=2)
    x = torch.randn(2, 2, *PATCH)
    outs = net(x)
    expected = nnunet_ds_target_shapes(PATCH, STRIDES)
    assert len(outs) == len(expected) == 4
    assert [tuple(o.shape) for o in outs] == [(2, 3, *s) for s in expected]
    assert tuple(outs[0].shape[2:]) == PATCH  # highest resolution first

    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.encoder.stem.conv.weight.grad.abs().sum() > 0


def test_deep_supervision_toggle_returns_full_resolution_tensor():
    net = build()
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        ds_outs = net(x)
        net.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled does
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *PATCH)
    torch.testing.assert_close(out, ds_outs[0])


def test_non_divisible_input_is_handled():
    net = build(deep_supervision=False)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 5, 15, 21))
    assert out.shape == (1, 3, 5, 15, 21)


def test_state_dict_keys_shared_between_pretraining_and_finetuning_networks(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    mots, kits = build(num_classes=11), build(num_classes=3)
    sd_mots, sd_kits = mots.state_dict(), kits.state_dict()
    assert sd_mots.keys() == sd_kits.keys()
    differing = sorted(k for k in sd_kits if sd_kits[k].shape != sd_mots[k].shape)
    assert differing and all(".seg_layers." in k for k in differing)
    assert not any(k.startswith("decoder.encoder.") for k in sd_kits), "encoder registered twice"

    # nnU-Net's own -pretrained_weights loader accepts the checkpoint and moves everything but the seg layers
    with torch.no_grad():
        for p in mots.parameters():
            p.add_(1.0)
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": mots.state_dict()}, ckpt)
    load_pretrained_weights(kits, str(ckpt))
    torch.testing.assert_close(kits.encoder.aspp.project.conv.weight, mots.encoder.aspp.project.conv.weight)
    torch.testing.assert_close(kits.decoder.stages[0][0].conv1.conv.weight,
                               mots.decoder.stages[0][0].conv1.conv.weight)
    assert not torch.equal(kits.decoder.seg_layers[-1].bias, mots.decoder.seg_layers[-1].bias[:3])


@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("size", [PATCH, (5, 15, 21)])
def test_conv_feature_map_size_counts_every_conv_output(size, deep_supervision):
    net = build(deep_supervision=deep_supervision)
    counted = []
    hooks = [m.register_forward_hook(lambda m, i, o: counted.append(o[0].numel()))
             for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        net(torch.randn(1, 1, *size))
    for h in hooks:
        h.remove()
    assert net.compute_conv_feature_map_size(size) == sum(counted)


def test_block_structure_follows_the_paper():
    net = build()
    assert [len(s) for s in net.encoder.stages] == [1, 3, 4, 6, 3]
    assert all(len(s) == 1 and isinstance(s[0], DecoderResidualBlock) for s in net.decoder.stages)
    block = net.encoder.stages[1][0]
    assert isinstance(block, EncoderResidualBlock)
    # conv-IN-conv-IN-conv-IN, no activation inside, the stride on the first conv, projection shortcut
    assert [b.nonlin for b in (block.conv1, block.conv2, block.conv3)] == [None, None, None]
    assert isinstance(block.conv1.norm, nn.InstanceNorm3d) and isinstance(block.conv3.norm, nn.InstanceNorm3d)
    assert block.conv1.conv.stride == (1, 2, 2) and block.conv2.conv.stride == (1, 1, 1)
    assert isinstance(block.shortcut, nn.Module) and not isinstance(block.shortcut, nn.Identity)
    assert isinstance(net.encoder.stages[1][1].shortcut, nn.Identity)
    dec = net.decoder.stages[0][0]
    assert isinstance(dec.conv1.nonlin, nn.LeakyReLU) and dec.conv2.nonlin is None
    # He init, residual branches start at zero
    assert torch.count_nonzero(block.conv3.norm.weight) == 0 and torch.count_nonzero(dec.conv2.norm.weight) == 0
    assert torch.count_nonzero(block.conv1.norm.weight) == block.conv1.norm.weight.numel()


def test_aspp_dilates_only_along_axes_with_kernel_3():
    net = build(aspp_rates=(1, 2, 4))  # bottleneck kernel [1, 3, 3]
    aspp = net.encoder.aspp
    assert isinstance(aspp, ASPP) and len(aspp.branches) == 3
    assert [b.conv.dilation for b in aspp.branches] == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert [b.conv.padding for b in aspp.branches] == [(0, 1, 1), (0, 2, 2), (0, 4, 4)]
    assert aspp.project.conv.in_channels == 4 * 12 and aspp.project.conv.out_channels == 12

    isotropic = build(kernel_sizes=[[3, 3, 3]] * 5, aspp_rates=(2,))
    assert isotropic.encoder.aspp.branches[0].conv.dilation == (2, 2, 2)

    plain = build(aspp_rates=())
    assert plain.encoder.aspp is None
    assert plain(torch.randn(1, 1, *PATCH))[0].shape == (1, 3, *PATCH)


def test_encoder_exposes_what_decoders_and_trainers_read():
    net = build()
    enc = net.encoder
    assert enc.output_channels == [4, 6, 8, 10, 12]
    assert enc.strides == STRIDES and enc.kernel_sizes == KERNELS
    assert enc.conv_op is nn.Conv3d and enc.norm_op is nn.InstanceNorm3d and enc.nonlin is nn.LeakyReLU
    skips = enc(torch.randn(1, 1, *PATCH))
    assert [s.shape[1] for s in skips] == enc.output_channels
    assert tuple(skips[-1].shape[2:]) == (1, 2, 3)
    assert isinstance(net.decoder.seg_layers, nn.ModuleList) and len(net.decoder.seg_layers) == 4
    net.get_submodule(net.key_to_stem)
    assert net.get_submodule(net.keys_to_in_proj[0]).weight.shape[1] == 1


def test_2d_configuration():
    net = ResUNetASPP(input_channels=3, num_classes=2, n_stages=4, features_per_stage=[4, 8, 8, 8],
                      conv_op="torch.nn.Conv2d", kernel_sizes=3, strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 1],
                      n_conv_per_stage_decoder=1, norm_op="torch.nn.InstanceNorm2d",
                      norm_op_kwargs={"affine": True}, nonlin="torch.nn.LeakyReLU", deep_supervision=True)
    outs = net(torch.randn(2, 3, 32, 24))
    assert [tuple(o.shape) for o in outs] == [(2, 2, 32, 24), (2, 2, 16, 12), (2, 2, 8, 6)]


def test_get_network_from_plans_builds_and_initialises():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kw = arch_kwargs(conv_op="torch.nn.modules.conv.Conv3d", norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                     nonlin="torch.nn.LeakyReLU", aspp_rates=[1, 2])
    net = get_network_from_plans("nnunet_transfer.architectures.res_unet_aspp.ResUNetASPP", kw,
                                 ("conv_op", "norm_op", "dropout_op", "nonlin"), 1, 4, allow_init=True,
                                 deep_supervision=True)
    assert isinstance(net, ResUNetASPP) and net.decoder.deep_supervision
    assert torch.count_nonzero(net.encoder.stages[0][0].conv3.norm.weight) == 0  # initialize() ran
    with torch.no_grad():
        assert net(torch.randn(1, 1, *PATCH))[0].shape == (1, 4, *PATCH)


@pytest.mark.parametrize("overrides, word", [
    (dict(n_blocks_per_stage=[1, 2, 3]), "n_blocks_per_stage"),
    (dict(n_blocks_per_stage=[1, 0, 1, 1, 1]), "n_blocks_per_stage"),
    (dict(n_conv_per_stage_decoder=[1, 1]), "n_conv_per_stage_decoder"),
    (dict(kernel_sizes=[[1, 3]] * 5), "kernel_sizes[0]"),
    (dict(strides=[[1, 1, 1]] * 4), "strides"),
    (dict(conv_op="torch.nn.NoSuchConv"), "conv_op"),
    (dict(aspp_rates=(0, 2)), "aspp_rates"),
])
def test_invalid_arch_kwargs_name_the_culprit(overrides, word):
    with pytest.raises(ValueError, match=word.replace("[", r"\[").replace("]", r"\]")):
        ResUNetASPP(input_channels=1, num_classes=2, **arch_kwargs(**overrides))
