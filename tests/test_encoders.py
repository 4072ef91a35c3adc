"""The encoder registry and the weight-transfer keys (key_to_encoder, key_to_stem, keys_to_in_proj) of our networks."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.abstract_arch import test_submodules_loadable as check_keys_load
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.architectures.attention_unet import AttentionUNet
from nnunet_transfer.architectures.dynamic_head import DynamicHeadNetwork
from nnunet_transfer.architectures.encoders import (
    ENCODERS,
    PRETRAINED_FORMATS,
    UnknownEncoderError,
    get_encoder,
    resolve_encoder,
)
from nnunet_transfer.architectures.transfer_keys import network_keys
from nnunet_transfer.architectures.localizer import LocalizerNetwork
from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.architectures.med3d_branches import Med3DBranchNetwork
from nnunet_transfer.architectures.med3d_unet import Med3DUNet
from nnunet_transfer.architectures.mleam import MLEAMUNet
from nnunet_transfer.architectures.res_unet_aspp import ResUNetASPP
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.pretrained.formats.medicalnet import medicalnet_layout
from nnunet_transfer.transfer.medicalnet import load_medicalnet
from nnunet_transfer.transfer.adapt import tensor_roles

PLAIN = dict(n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv3d, kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
             strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], conv_bias=True,
             norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
             nonlin_kwargs={"inplace": True})
#: arguments each entry is built with in these tests
SAMPLE_KWARGS = {"plain": PLAIN, "localization-paper": PLAIN,
                 **{name: {"strides": [2, [1, 2, 2], 2]} for name in ENCODERS if name.startswith("med3d-")}}


def test_registry_names_and_lookup():
    assert list(ENCODERS) == ["plain"] + [f"med3d-resnet{d}" for d in (10, 18, 34, 50, 101, 152, 200)] + \
        ["localization-paper"]
    assert all(spec.name == name for name, spec in ENCODERS.items())
    assert get_encoder("med3d-resnet50") is ENCODERS["med3d-resnet50"]


def test_unknown_encoder_names_close_matches():
    with pytest.raises(UnknownEncoderError, match=r"unknown encoder 'med3d-resnet5O' \(did you mean 'med3d-resnet50'"):
        get_encoder("med3d-resnet5O")
    with pytest.raises(ValueError, match="registered encoders: plain, med3d-resnet10"):
        get_encoder("vit")


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_entry_builds_and_exposes_what_it_claims(name):
    spec = get_encoder(name)
    kwargs = SAMPLE_KWARGS[name]
    claimed = spec.describe(**kwargs)
    small = name in ("plain", "med3d-resnet10", "localization-paper")
    with torch.device("cpu" if small else "meta"):  # the deep ResNets: shapes only, no memory
        encoder = spec.build(2, **kwargs)
    assert list(encoder.output_channels) == list(claimed.channels)
    assert [tuple(s) for s in encoder.strides] == list(claimed.strides)
    assert set(spec.pretrained_formats) <= set(PRETRAINED_FORMATS) and spec.takes("nnunet-checkpoint")
    assert spec.takes("medicalnet") == name.startswith("med3d-")
    # the relative keys name real modules, and the input projections take the input channels
    key_encoder, key_stem, in_proj = network_keys(encoder)
    holder = nn.Module()
    holder.encoder = encoder
    for key in (key_encoder, key_stem, *in_proj):
        holder.get_submodule(key)
    assert {holder.get_submodule(k).weight.shape[1] for k in in_proj} == {2}
    if small:
        x = torch.randn(1, 2, 16, 16, 16)
        skips = encoder(x)
        assert [s.shape[1] for s in skips] == list(claimed.channels)
        total = [1, 1, 1]
        for skip, stride in zip(skips, claimed.strides):
            total = [t * s for t, s in zip(total, stride)]
            assert list(skip.shape[2:]) == [-(-16 // t) for t in total]


def test_medicalnet_weights_load_into_the_med3d_entries():
    encoder = get_encoder("med3d-resnet10").build(1)
    source = Med3DResNet(depth=10)
    report = load_medicalnet(encoder, medicalnet_layout(source.state_dict()))
    assert report.complete and torch.equal(encoder.layer4[0].conv2.weight, source.layer4[0].conv2.weight)


def test_plans_family_form_and_fixed_arguments():
    spec, rest = resolve_encoder("med3d", {"depth": 18, "shortcut_type": "A"})
    assert spec.name == "med3d-resnet18" and rest == {"shortcut_type": "A"}
    assert resolve_encoder("med3d", {})[0].name == "med3d-resnet50"  # Med3DResNet's default depth
    assert resolve_encoder("plain", PLAIN) == (ENCODERS["plain"], PLAIN)
    with pytest.raises(ValueError, match="cannot be built with {'depth': 34}"):
        get_encoder("med3d-resnet18").build(1, depth=34)
    with pytest.raises(TypeError, match="missing PlainConvUNet argument"):
        get_encoder("plain").build(1, n_stages=3)


def test_dna_encoder_keys_equal_the_dna_unets_own():
    for cls in (PlainConvUNet, ResidualEncoderUNet):
        extra = {"n_conv_per_stage": 1} if cls is PlainConvUNet else {"n_blocks_per_stage": 1}
        unet = cls(1, 3, [4, 8, 8], nn.Conv3d, 3, [1, 2, 2], num_classes=2, n_conv_per_stage_decoder=1,
                   norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU, **extra)
        assert network_keys(unet.encoder) == (unet.key_to_encoder, unet.key_to_stem, tuple(unet.keys_to_in_proj))


def _plain_unet(num_classes: int, input_channels: int = 2) -> PlainConvUNet:
    kwargs = {k: v for k, v in PLAIN.items()}
    return PlainConvUNet(input_channels, num_classes=num_classes, n_conv_per_stage_decoder=1, **kwargs)


def _networks():
    """One of every network class we ship, each with 2 input channels."""
    backbone = _plain_unet(8)
    yield "Med3DUNet", Med3DUNet(2, 3, depth=10, decoder_features=(16, 16, 8, 8, 8), n_conv_per_stage_decoder=1)
    yield "MLEAMUNet plain", MLEAMUNet(2, 3, encoder="plain", **PLAIN)
    yield "MLEAMUNet med3d", MLEAMUNet(2, 3, encoder="med3d", depth=10)
    yield "ResUNetASPP", ResUNetASPP(2, 3, [4, 8, 8], nn.Conv3d, 3, [1, 2, 2], [1, 1, 1], num_classes=2,
                                     norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU)
    yield "AttentionUNet", AttentionUNet(2, num_classes=3, n_conv_per_stage_decoder=1, **PLAIN)
    yield "LocalizerNetwork", LocalizerNetwork(_plain_unet(1).encoder, 8, [2, 2, 2])
    yield "DynamicHeadNetwork", DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS,
                                                   mots_tasks.head_channel_index())
    yield "Med3DBranchNetwork med3d", Med3DBranchNetwork(Med3DResNet(depth=10, in_channels=2), mots_tasks.NUM_TASKS,
                                                         mots_tasks.head_channel_index())
    yield "Med3DBranchNetwork plain", Med3DBranchNetwork(_plain_unet(1).encoder, mots_tasks.NUM_TASKS,
                                                         mots_tasks.head_channel_index())


@pytest.mark.parametrize("name,network", list(_networks()), ids=[n for n, _ in _networks()])
def test_networks_name_their_encoder_stem_and_input_convolution(name, network):
    check_keys_load(network)  # dynamic-network-architectures' own check: the keys name loadable modules
    encoder = network.get_submodule(network.key_to_encoder)
    assert network.key_to_encoder.split(".")[0] == "encoder" and any(True for _ in encoder.parameters())
    assert network.get_submodule(network.key_to_stem) is not None
    for key in network.keys_to_in_proj:
        module = network.get_submodule(key)
        assert isinstance(module, nn.modules.conv._ConvNd) and module.in_channels == 2
    # the transfer's input-channel rule applies to exactly these convolutions
    roles = tensor_roles(network)
    first = {k for k, r in roles.items() if r.first_conv}
    assert first == {f"{k}.weight" for k in network.keys_to_in_proj}
