"""Tests of the attention-gated U-Net: built by nnU-Net from plans, PlainConvUNet-compatible weights, gates."""

from __future__ import annotations

import copy

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_transfer.architectures.attention_unet import (
    GATE_KEY_PREFIX,
    AttentionGate,
    AttentionUNet,
    gate_state_dict_keys,
)

ARCH_CLASS = "nnunet_transfer.architectures.attention_unet.AttentionUNet"
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

# Shaped like nnU-Net 2.x plans (3d_fullres of an anisotropic CT/MR dataset, and a 2d configuration with a
# stride-1 axis), as stored in plans.json (class names as strings), with tiny feature counts to stay fast.
PLANS_ARCH_KWARGS = {
    "3d": {
        "n_stages": 5,
        "features_per_stage": [2, 4, 8, 8, 8],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "2d": {
        "n_stages": 4,
        "features_per_stage": [2, 4, 8, 8],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3], [3, 3], [3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2], [2, 2], [2, 1]],
        "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
}
# Patch sizes: the product of the strides per axis times 2 (instance norm needs >1 voxel at the bottleneck).
PATCH = {"3d": (8, 32, 32), "2d": (16, 8)}
NUM_CLASSES = 3


def build(dim: str, arch_class: str = ARCH_CLASS, input_channels: int = 1, deep_supervision: bool = True,
          seed: int = 0, **extra) -> nn.Module:
    """Build a network the way nnU-Net does (pydoc.locate, kwargs from plans, apply(initialize))."""
    torch.manual_seed(seed)
    return get_network_from_plans(arch_class, {**PLANS_ARCH_KWARGS[dim], **extra}, REQ_IMPORT, input_channels,
                                  NUM_CLASSES, allow_init=True, deep_supervision=deep_supervision)


def build_plain(dim: str, **kwargs) -> nn.Module:
    return build(dim, arch_class="dynamic_network_architectures.architectures.unet.PlainConvUNet", **kwargs)


def batch(dim: str, channels: int = 1, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, *PATCH[dim], generator=generator)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_nnunet_builds_it_from_plans_kwargs(dim):
    net = build(dim)
    assert type(net) is AttentionUNet
    assert isinstance(net, PlainConvUNet)
    assert len(net.decoder.attention_gates) == PLANS_ARCH_KWARGS[dim]["n_stages"] - 1
    assert net.decoder.deep_supervision is True
    assert len(net.decoder.seg_layers) == PLANS_ARCH_KWARGS[dim]["n_stages"] - 1


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_forward_shapes_match_plain_unet(dim, deep_supervision):
    net, plain = build(dim, deep_supervision=deep_supervision), build_plain(dim, deep_supervision=deep_supervision)
    x = batch(dim)
    with torch.no_grad():
        out, ref = net(x), plain(x)
    if deep_supervision:
        assert isinstance(out, list) and len(out) == len(ref) == PLANS_ARCH_KWARGS[dim]["n_stages"] - 1
        assert [o.shape for o in out] == [r.shape for r in ref]
        assert out[0].shape == (2, NUM_CLASSES, *PATCH[dim])
    else:
        assert torch.is_tensor(out) and out.shape == ref.shape == (2, NUM_CLASSES, *PATCH[dim])


def test_deep_supervision_toggles_like_nnunet():
    """nnU-Net switches deep supervision by setting network.decoder.deep_supervision."""
    net = build("3d", deep_supervision=True)
    x = batch("3d")
    with torch.no_grad():
        multi = net(x)
        net.decoder.deep_supervision = False
        single = net(x)
    assert isinstance(multi, list)
    assert torch.is_tensor(single)
    torch.testing.assert_close(single, multi[0])


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_state_dict_is_plain_unet_plus_gate_keys(dim):
    net = build(dim)
    net_sd, plain_sd = net.state_dict(), build_plain(dim).state_dict()
    gate_keys = gate_state_dict_keys(net)
    assert gate_keys and all(k.startswith(GATE_KEY_PREFIX) for k in gate_keys)
    non_gate = [k for k in net_sd if not k.startswith(GATE_KEY_PREFIX)]
    assert non_gate == list(plain_sd)  # same names, same order
    assert {k: net_sd[k].shape for k in non_gate} == {k: v.shape for k, v in plain_sd.items()}


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_gate_free_checkpoint_loads_with_only_gates_missing(dim, tmp_path):
    plain = build_plain(dim, seed=1)
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": plain.state_dict()}, path)
    weights = torch.load(path, weights_only=True)["network_weights"]

    net = build(dim, seed=2)
    result = net.load_state_dict(weights, strict=False)
    assert sorted(result.missing_keys) == sorted(gate_state_dict_keys(net))
    assert result.unexpected_keys == []
    loaded = net.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_transfer_start_is_close_to_gate_free_network():
    """Default gates (residual, psi weights 0, psi bias 3) start as alpha*x with alpha = sigmoid(3), so the network
    loaded from a gate-free checkpoint nearly reproduces it; the paper's W(alpha*x) with instance norm does not."""
    plain = build_plain("3d", deep_supervision=False, seed=3)
    plain.eval()
    x = batch("3d", seed=4)
    with torch.no_grad():
        reference = plain(x)

    def relative_deviation(**gate_kwargs) -> float:
        net = build("3d", deep_supervision=False, seed=5, **gate_kwargs)
        net.load_state_dict(plain.state_dict(), strict=False)
        net.eval()
        with torch.no_grad():
            out = net(x)
        return ((out - reference).norm() / reference.norm()).item()

    transfer_start = relative_deviation()
    paper_gate = relative_deviation(gate_residual=False)
    nearly_open = relative_deviation(gate_psi_bias=8.0)
    assert transfer_start < 0.1
    assert nearly_open < 1e-2 < transfer_start  # the only difference left is alpha = sigmoid(bias) < 1
    assert paper_gate > 0.3


def test_initialize_keeps_the_gate_start():
    """nnU-Net's apply(initialize) He-initialises every conv; the gates must still start as documented."""
    net = build("3d")
    for gate in net.decoder.attention_gates:
        assert torch.all(gate.psi.bias == 3.0)
        assert torch.all(gate.psi.weight == 0)
        assert torch.all(gate.W[1].weight == 0) and torch.all(gate.W[1].bias == 0)
        assert gate.theta.bias is None and gate.phi.bias is not None
        assert gate.theta.weight.abs().sum() > 0
    paper = build("3d", gate_residual=False)
    for gate in paper.decoder.attention_gates:
        assert torch.all(gate.psi.bias == 3.0)
        assert gate.psi.weight.abs().sum() > 0
        assert torch.all(gate.W[1].weight == 1)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_attention_maps_have_skip_size_and_values_in_unit_interval(dim):
    net = build(dim, gate_residual=False)  # random psi weights, so the maps vary spatially
    with pytest.raises(RuntimeError, match="forward pass"):
        net.attention_maps()
    x = batch(dim)
    with torch.no_grad():
        skips = net.encoder(x)
        net(x)
    maps = net.attention_maps()
    assert len(maps) == len(skips) - 1
    for attention, skip in zip(maps, skips[:-1]):  # highest resolution first, like the skips
        assert attention.shape == (x.shape[0], 1, *skip.shape[2:])
        assert attention.min() >= 0 and attention.max() <= 1
        assert not attention.requires_grad
    assert maps[0].shape[2:] == x.shape[2:]
    assert maps[0].std() > 0


def test_default_attention_starts_uniform():
    net = build("2d")
    with torch.no_grad():
        net(batch("2d"))
    expected = torch.sigmoid(torch.tensor(3.0))
    for attention in net.attention_maps():
        torch.testing.assert_close(attention, torch.full_like(attention, expected.item()))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_backward_reaches_gates_and_unet(dim):
    net = build(dim, deep_supervision=True)
    outputs = net(batch(dim))
    loss = sum(o.square().mean() for o in outputs)
    loss.backward()
    for gate in net.decoder.attention_gates:
        assert gate.psi.weight.grad is not None and gate.psi.weight.grad.abs().sum() > 0
        assert gate.psi.bias.grad.abs().sum() > 0
        assert gate.W[1].weight.grad.abs().sum() > 0
    stem = net.encoder.stages[0][0].convs[0].conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_three_input_channels_build_and_differ_only_in_the_stem():
    """Paper setting: a 1-channel (MRI) U-Net transferred to RGB input (3 channels)."""
    net = build("2d", input_channels=3)
    with torch.no_grad():
        out = net(batch("2d", channels=3))
    assert out[0].shape == (2, NUM_CLASSES, *PATCH["2d"])
    net_sd, plain_sd = net.state_dict(), build_plain("2d", input_channels=1).state_dict()
    differing = sorted(k for k, v in plain_sd.items() if net_sd[k].shape != v.shape)
    stem_keys = {f"{prefix}{key}.weight" for prefix in ("", "decoder.") for key in net.keys_to_in_proj}
    assert set(differing) == stem_keys
    assert net_sd["encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 3


def test_gate_with_anisotropic_subsample_and_resampled_gating_signal():
    gate = AttentionGate(6, 10, conv_op=nn.Conv3d, norm_op=nn.InstanceNorm3d,
                         norm_op_kwargs={"affine": True}, subsample=[1, 2, 2], residual=False)
    assert gate.theta.kernel_size == (1, 2, 2) and gate.theta.stride == (1, 2, 2)
    assert gate.theta.out_channels == 3
    x = torch.randn(1, 6, 3, 9, 9)
    g = torch.randn(1, 10, 3, 5, 5)  # stride-2 conv output of a 9-voxel axis: 5, theta gives 4 -> resampled
    out = gate(x, g)
    assert out.shape == x.shape
    assert gate.last_attention.shape == (1, 1, 3, 9, 9)


def test_gate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2D and 3D"):
        AttentionGate(4, 4, conv_op=nn.Conv1d, norm_op=None)
    with pytest.raises(ValueError, match="subsample"):
        AttentionGate(4, 4, conv_op=nn.Conv2d, norm_op=None, subsample=[2, 2, 2])
    with pytest.raises(ValueError, match="affine"):
        AttentionGate(4, 4, conv_op=nn.Conv2d, norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": False})


def test_gate_without_norm_starts_as_scaled_identity():
    gate = AttentionGate(4, 8, conv_op=nn.Conv2d, norm_op=None)
    x, g = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(gate(x, g), torch.sigmoid(torch.tensor(3.0)) * x)


def test_feature_map_size_estimate_counts_gates():
    net, plain = build("3d"), build_plain("3d")
    size = PATCH["3d"]
    assert net.compute_conv_feature_map_size(size) > plain.compute_conv_feature_map_size(size)


def test_deepcopy_and_eval_mode_work():
    """nnU-Net deep-copies networks for EMA/inference-style use; the gates' cached maps must not break that."""
    net = build("2d", deep_supervision=False)
    x = batch("2d")
    with torch.no_grad():
        net(x)
        clone = copy.deepcopy(net).eval()
        torch.testing.assert_close(clone(x), net.eval()(x))
