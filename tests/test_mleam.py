"""MLEAM decoder: block shapes, nnU-Net construction and contracts, deep supervision, edge loss."""

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_transfer.architectures.mleam import (
    EdgeAttention,
    MLEAMUNet,
    PyramidAttentionModule,
    ResidualRefinementBlock,
    LayerConfig,
)
from nnunet_transfer.losses.edge_targets import edge_targets_for_deep_supervision
from nnunet_transfer.losses.mleam_edge import mleam_edge_loss


def _cfg(conv_op=nn.Conv3d):
    norm = nn.InstanceNorm3d if conv_op is nn.Conv3d else nn.InstanceNorm2d
    return LayerConfig(conv_op, norm, {"affine": True}, nn.LeakyReLU, {"inplace": True}, True)


def _plain_kwargs(dim=3, n_stages=4, features=(4, 8, 16, 16)):
    """Plans-style PlainConvUNet kwargs with anisotropic first stages (like nnU-Net plans for thick slices)."""
    if dim == 3:
        kernel_sizes = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]][:n_stages]
        strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]][:n_stages]
        conv_op, norm_op = nn.Conv3d, nn.InstanceNorm3d
    else:
        kernel_sizes = [[3, 3]] * n_stages
        strides = [[1, 1]] + [[2, 2]] * (n_stages - 1)
        conv_op, norm_op = nn.Conv2d, nn.InstanceNorm2d
    return dict(n_stages=n_stages, features_per_stage=list(features[:n_stages]), conv_op=conv_op,
                kernel_sizes=kernel_sizes, strides=strides, n_conv_per_stage=[1] * n_stages,
                n_conv_per_stage_decoder=[1] * (n_stages - 1), conv_bias=True, norm_op=norm_op,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def _nnunet_ds_scales(strides):
    """nnU-Net's nnUNetTrainer._get_deep_supervision_scales formula, from pool_op_kernel_sizes (= strides)."""
    return list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


def test_rrb_kernels_are_in_plane_then_between_slices():
    rrb = ResidualRefinementBlock(_cfg(), 6, 4)
    assert rrb.project[0].weight.shape == (4, 6, 1, 1, 1)
    assert rrb.in_plane.weight.shape == (4, 4, 1, 3, 3)  # (z, y, x): 3x3 inside a slice
    assert rrb.between_slices.weight.shape == (4, 4, 3, 1, 1)  # across slices only
    x = torch.randn(2, 6, 5, 7, 9)
    assert rrb(x).shape == (2, 4, 5, 7, 9)
    # the in-plane conv does not mix slices: changing slice 0 of the projection input leaves other slices of the
    # in-plane output unchanged
    p = torch.randn(1, 4, 5, 7, 9)
    q = p.clone()
    q[:, :, 0] += 1
    diff = (rrb.in_plane(p) - rrb.in_plane(q)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 0 and torch.all(diff[1:] == 0)
    rrb2d = ResidualRefinementBlock(_cfg(nn.Conv2d), 3, 5)
    assert rrb2d.in_plane.weight.shape == (5, 5, 3, 3) and rrb2d.between_slices.weight.shape == (5, 5, 3, 3)
    assert rrb2d(torch.randn(1, 3, 6, 7)).shape == (1, 5, 6, 7)


def test_pam_shapes_kernels_and_skip_added_back():
    pam = PyramidAttentionModule(_cfg(), 8, kernel_sizes=(3, 5, 7), large_kernel_axes=[False, True, True])
    skip, up = torch.randn(2, 8, 3, 10, 12), torch.randn(2, 8, 3, 10, 12)
    assert pam(skip, up).shape == skip.shape
    kernels = sorted(tuple(m.kernel_size) for m in pam.branches.modules() if isinstance(m, nn.Conv3d))
    assert kernels == [(1, 1, 3), (1, 1, 5), (1, 1, 7), (1, 3, 1), (1, 5, 1), (1, 7, 1)]  # none along z
    # attention from the decoder gates the pyramid: shut it (sigmoid -> 0) and only the skip remains
    with torch.no_grad():
        pam.attention.weight.zero_()
        pam.attention.bias.fill_(-1e4)
    torch.testing.assert_close(pam(skip, up), skip)
    pam2d = PyramidAttentionModule(_cfg(nn.Conv2d), 6, kernel_sizes=(3, 5))
    assert pam2d(torch.randn(1, 6, 9, 11), torch.randn(1, 6, 9, 11)).shape == (1, 6, 9, 11)
    with pytest.raises(ValueError, match="odd"):
        PyramidAttentionModule(_cfg(), 8, kernel_sizes=(4,))


def test_edge_attention_shapes_and_residual_gate():
    ea = EdgeAttention(_cfg(), 8)
    x = torch.randn(2, 8, 4, 6, 5)
    gated, e = ea(x)
    assert gated.shape == x.shape and e.shape == (2, 1, 4, 6, 5)
    torch.testing.assert_close(gated, x * (1 + torch.sigmoid(e)))
    with torch.no_grad():
        ea.head[-1].bias.fill_(-1e4)
    torch.testing.assert_close(ea(x)[0], x)  # no edge -> features unchanged (not zeroed)


def test_plain_3d_deep_supervision_matches_nnunet_targets_and_backward():
    kw = _plain_kwargs(3)
    net = MLEAMUNet(input_channels=2, num_classes=3, **kw, deep_supervision=True)
    net.apply(net.initialize)
    patch = (8, 24, 20)
    x = torch.randn(2, 2, *patch)
    seg = torch.randint(0, 3, (2, 1, *patch))
    scales = net.deep_supervision_scales()
    np.testing.assert_allclose(scales, _nnunet_ds_scales(kw["strides"]))
    targets = DownsampleSegForDSTransform(scales)._apply_to_segmentation(seg[0])  # one sample
    out = net(x)
    assert isinstance(out, list) and len(out) == kw["n_stages"] - 1
    assert [tuple(o.shape[2:]) for o in out] == [tuple(t.shape[1:]) for t in targets]  # highest resolution first
    assert tuple(out[0].shape) == (2, 3, *patch)
    edges = net.last_edge_logits
    assert [tuple(e.shape) for e in edges] == [(2, 1, *o.shape[2:]) for o in out[:3]]

    ds_targets = [seg] + [seg[:, :, :, ::2, ::2], seg[:, :, ::2, ::4, ::4]]
    ce = DeepSupervisionWrapper(lambda o, t: nn.functional.cross_entropy(o, t[:, 0].long()), [1, 0.5, 0.25])
    loss = ce(out, ds_targets) + mleam_edge_loss(edges, ds_targets)
    loss.backward()
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.edge_attention.parameters())

    # nnU-Net toggles decoder.deep_supervision: then a plain tensor at input resolution (inference contract)
    net.decoder.deep_supervision = False
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 3, *patch)
    assert len(net.last_edge_logits) == 3


def test_odd_anisotropic_patches_3d_and_2d():
    net3d = MLEAMUNet(1, 2, **_plain_kwargs(3))
    with torch.no_grad():
        assert net3d(torch.randn(1, 1, 5, 19, 23)).shape == (1, 2, 5, 19, 23)
    net2d = MLEAMUNet(1, 4, **_plain_kwargs(2), deep_supervision=True)
    out = net2d(torch.randn(2, 1, 27, 33))
    assert [tuple(o.shape) for o in out] == [(2, 4, 27, 33), (2, 4, 14, 17), (2, 4, 7, 9)]
    assert [tuple(e.shape[2:]) for e in net2d.last_edge_logits] == [(27, 33), (14, 17), (7, 9)]
    seg, edges = net2d.forward_with_edges(torch.randn(1, 1, 16, 16))
    assert len(seg) == 3 and len(edges) == 3


class _DilatedFakeEncoder(nn.Module):
    """Med3D-like: stride-2 stem (no full-resolution skip), then stride-1 (dilated) stages; DNA attributes."""

    def __init__(self, in_ch=1):
        super().__init__()
        self.output_channels = [8, 12, 16, 16]
        self.strides = [[2, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]
        self.conv_op, self.conv_bias = nn.Conv3d, False
        self.norm_op, self.norm_op_kwargs = nn.BatchNorm3d, {"eps": 1e-5}
        self.nonlin, self.nonlin_kwargs = nn.ReLU, {"inplace": False}
        convs, c = [], in_ch
        for out_c, s in zip(self.output_channels, self.strides):
            d = 1 if s != [1, 1, 1] else 2
            convs.append(nn.Conv3d(c, out_c, 3, stride=s, padding=d, dilation=d))
            c = out_c
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        skips = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            skips.append(x)
        return skips


def test_decoder_on_encoder_with_stride_one_stages_and_downsampling_stem():
    from nnunet_transfer.architectures.mleam import MLEAMDecoder

    enc = _DilatedFakeEncoder()
    dec = MLEAMDecoder(enc, num_classes=2, deep_supervision=True, norm_op=nn.InstanceNorm3d,
                       norm_op_kwargs={"affine": True})
    assert dec.full_res_level and dec.n_levels == 4
    assert isinstance(dec.stages[0][0].project[1], nn.InstanceNorm3d)  # decoder norm override
    x = torch.randn(2, 1, 9, 22, 17)
    out = dec(enc(x), output_size=x.shape[2:])
    # levels: full res (extra), stem (1/2), stage1 (1/2,1/4,1/4), stage2 (same, stride 1)
    assert [tuple(o.shape[2:]) for o in out] == [(9, 22, 17), (5, 11, 9), (5, 6, 5), (5, 6, 5)]
    assert [tuple(e.shape[2:]) for e in dec.last_edge_logits] == [(9, 22, 17), (5, 11, 9), (5, 6, 5)]
    sum(o.mean() for o in out).backward()
    # stride-1 stage: the "upsampler" is a kernel-1 transposed conv, no resolution change
    assert tuple(dec.upsamplers[0].kernel_size) == (1, 1, 1)


def test_nnunet_builds_it_from_plans_and_loads_pretrained_weights_except_seg_layers(tmp_path):
    kw = _plain_kwargs(3)
    str_kwargs = dict(kw, conv_op="torch.nn.modules.conv.Conv3d", nonlin="torch.nn.LeakyReLU",
                      norm_op="torch.nn.modules.instancenorm.InstanceNorm3d")
    req_import = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    build = lambda n_out, ds: get_network_from_plans(  # noqa: E731 - nnU-Net's own construction path
        "nnunet_transfer.architectures.mleam.MLEAMUNet", str_kwargs, req_import, 1, n_out, deep_supervision=ds)
    pretrained = build(5, True)
    assert isinstance(pretrained, MLEAMUNet) and pretrained.decoder.deep_supervision
    ckpt = tmp_path / "pre.pth"
    torch.save({"network_weights": pretrained.state_dict()}, ckpt)
    target = build(2, False)
    differing = [k for k, v in target.state_dict().items() if v.shape != pretrained.state_dict()[k].shape]
    assert differing and all(".seg_layers." in k for k in differing)
    load_pretrained_weights(target, str(ckpt))
    key = "decoder.edge_attention.0.head.1.weight"
    torch.testing.assert_close(target.state_dict()[key], pretrained.state_dict()[key])


def test_edge_loss_weights_levels_and_single_target_path():
    torch.manual_seed(0)
    seg = torch.zeros(1, 1, 8, 16, 16, dtype=torch.int64)
    seg[:, :, 2:6, 4:12, 3:11] = 1
    ds = [seg, seg[:, :, :, ::2, ::2], seg[:, :, ::2, ::4, ::4]]
    logits = [torch.randn(1, 1, *t.shape[2:]) for t in ds]
    gt = edge_targets_for_deep_supervision(ds)
    mse = [nn.functional.mse_loss(torch.sigmoid(e), t) for e, t in zip(logits, gt)]
    # highest resolution (index 0) gets the paper's last weight 1.0, the coarsest 0.5
    expected = 1.0 * mse[0] + 0.8 * mse[1] + 0.5 * mse[2]
    torch.testing.assert_close(mleam_edge_loss(logits, ds), expected)
    torch.testing.assert_close(mleam_edge_loss(logits[:2], ds), 1.0 * mse[0] + 0.8 * mse[1])
    # full-resolution tensor (deep supervision off): resampled like nnU-Net's DS transform
    nn_targets = DownsampleSegForDSTransform([[1, 1, 1], [1, .5, .5], [.5, .25, .25]])._apply_to_segmentation(seg[0])
    torch.testing.assert_close(mleam_edge_loss(logits, seg), mleam_edge_loss(logits, [t[None] for t in nn_targets]))
    with pytest.raises(ValueError, match="deep_supervision_scales"):
        mleam_edge_loss(logits, [ds[0], ds[0], ds[0]])
    with pytest.raises(ValueError, match="forward"):
        mleam_edge_loss([], ds)


def test_edge_loss_decreases_when_training_on_a_toy_mask():
    torch.manual_seed(0)
    net = MLEAMUNet(1, 2, **_plain_kwargs(3), deep_supervision=True)
    net.apply(net.initialize)
    seg = torch.zeros(2, 1, 4, 16, 16, dtype=torch.int64)
    seg[:, :, 1:3, 4:11, 5:12] = 1
    x = seg.float() + 0.1 * torch.randn(seg.shape)
    ds = [seg, seg[:, :, :, ::2, ::2], seg[:, :, ::2, ::4, ::4]]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        net(x)
        loss = mleam_edge_loss(net.last_edge_logits, ds)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_constructor_errors_name_the_problem():
    with pytest.raises(TypeError, match="n_stages"):
        MLEAMUNet(1, 2, conv_op=nn.Conv3d)
    with pytest.raises(ValueError, match="unknown encoder 'vit'.*registered encoders: plain, med3d-resnet10"):
        MLEAMUNet(1, 2, encoder="vit")
    with pytest.raises(ValueError, match="n_conv_per_stage_decoder"):
        MLEAMUNet(1, 2, **dict(_plain_kwargs(3), n_conv_per_stage_decoder=[1, 1]))
    enc = PlainConvEncoder(1, 3, [4, 8, 8], nn.Conv3d, 3, [1, 2, 2], 1, return_skips=False)
    from nnunet_transfer.architectures.mleam import MLEAMDecoder

    dec = MLEAMDecoder(enc, 2)
    with pytest.raises(TypeError, match="lacks"):
        MLEAMDecoder(nn.Conv3d(1, 1, 1), 2)
    assert dec.n_edge_levels == 2  # only two decoder levels exist


def test_med3d_encoder_branch():
    med3d = pytest.importorskip("nnunet_transfer.architectures.med3d")
    net = MLEAMUNet(1, 3, encoder="med3d", depth=10, deep_supervision=True, decoder_norm_op=nn.InstanceNorm3d,
                    decoder_norm_op_kwargs={"affine": True})
    assert isinstance(net.encoder, med3d.Med3DResNet)
    x = torch.randn(1, 1, 16, 24, 24)
    out = net(x)
    scales = net.deep_supervision_scales()
    assert len(out) == len(scales) == 5
    for o, s in zip(out, scales):
        assert tuple(o.shape[2:]) == tuple(round(n * f) for n, f in zip(x.shape[2:], s))
    assert [tuple(e.shape[2:]) for e in net.last_edge_logits] == [tuple(o.shape[2:]) for o in out[:3]]
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(x).shape == (1, 3, 16, 24, 24)
