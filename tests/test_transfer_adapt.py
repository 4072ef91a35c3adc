"""Transfer between networks of different plans: one test per adaptation rule, stage matching, the report."""

import json

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.transfer.adapt import (AdaptOptions, NotAdaptable, TensorRole, adapt_kernel, adapt_tensor,
                                            copy_overlap)
from nnunet_transfer.transfer.record import PretrainedRecord, read_record, transfer_from_record, write_record
from nnunet_transfer.transfer.stages import match_stages
from nnunet_transfer.transfer.weights import transfer_weights

NORM = {"affine": True}


def _unet(features=(8, 16, 24, 32), kernels=None, strides=None, in_channels=1, num_classes=3, residual=False):
    n = len(features)
    kernels = kernels or [[3, 3, 3]] * n
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    cls = ResidualEncoderUNet if residual else PlainConvUNet
    return cls(in_channels, n, list(features), nn.Conv3d, kernels, strides, 1, num_classes, 1, True,
               nn.InstanceNorm3d, NORM, None, None, nn.LeakyReLU, {"inplace": True}, deep_supervision=True)


def _conv(weight, padding):
    conv = nn.Conv3d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), padding=padding, bias=False)
    conv.weight.data.copy_(weight)
    return conv


@torch.no_grad()
def test_kernel_3_to_1_sum_keeps_the_response_and_mean_divides_it_on_inputs_constant_along_that_axis():
    torch.manual_seed(0)
    weight = torch.randn(4, 2, 3, 3, 3)
    x = torch.randn(1, 2, 1, 9, 9).expand(1, 2, 6, 9, 9).contiguous()  # constant along z
    reference = _conv(weight, (1, 1, 1))(x)[:, :, 1:-1]  # interior slices: the z padding is out of play
    mean, note = adapt_kernel(weight, (1, 3, 3), reduce="mean")
    summed, _ = adapt_kernel(weight, (1, 3, 3), reduce="sum")
    assert mean.shape == (4, 2, 1, 3, 3) and "mean" in note and "[3, 3, 3] -> [1, 3, 3]" in note
    torch.testing.assert_close(_conv(summed, (0, 1, 1))(x)[:, :, 1:-1], reference)
    torch.testing.assert_close(_conv(mean, (0, 1, 1))(x)[:, :, 1:-1], reference / 3)
    # nnU-Net normalises every convolution's output: after the instance norm both rules give the same response
    norm = nn.InstanceNorm3d(4)
    torch.testing.assert_close(norm(_conv(mean, (0, 1, 1))(x)[:, :, 1:-1]), norm(reference), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_kernel_1_to_3_centre_keeps_every_response_and_spread_the_constant_one():
    torch.manual_seed(1)
    weight = torch.randn(4, 2, 1, 3, 3)
    x = torch.randn(1, 2, 5, 8, 8)
    centre, note = adapt_kernel(weight, (3, 3, 3), grow="centre")
    assert "centre" in note and torch.count_nonzero(centre[:, :, [0, 2]]) == 0
    torch.testing.assert_close(_conv(centre, (1, 1, 1))(x), _conv(weight, (0, 1, 1))(x))
    spread, note = adapt_kernel(weight, (3, 3, 3), grow="spread")
    assert "spread" in note
    flat = x[:, :, :1].expand(1, 2, 5, 8, 8).contiguous()
    torch.testing.assert_close(_conv(spread, (1, 1, 1))(flat)[:, :, 1:-1], _conv(weight, (0, 1, 1))(flat)[:, :, 1:-1])


@torch.no_grad()
def test_transposed_conv_stride_2_to_1_averages_each_block_and_1_to_2_repeats_it():
    torch.manual_seed(2)
    up = nn.ConvTranspose3d(6, 4, (2, 2, 2), (2, 2, 2))
    x = torch.randn(1, 6, 3, 4, 4)
    weight, note = adapt_kernel(up.weight, (1, 2, 2), transposed=True)
    assert "transposed-conv stride" in note and "area" in note
    smaller = nn.ConvTranspose3d(6, 4, (1, 2, 2), (1, 2, 2))
    smaller.weight.data.copy_(weight)
    smaller.bias.data.copy_(up.bias)
    out = up(x)
    torch.testing.assert_close(smaller(x), (out[:, :, 0::2] + out[:, :, 1::2]) / 2)
    back, note = adapt_kernel(smaller.weight, (2, 2, 2), transposed=True)
    assert "nearest" in note
    up.weight.data.copy_(back)
    torch.testing.assert_close(up(x), smaller(x).repeat_interleave(2, dim=2))


def test_channels_copy_the_overlap_and_decoder_concat_inputs_per_half():
    source = torch.arange(16 * 32, dtype=torch.float32).reshape(16, 32, 1, 1, 1)
    target = torch.full((12, 24, 1, 1, 1), -1.0)
    plain, note = adapt_tensor(source, target, TensorRole(conv=True))
    assert torch.equal(plain, source[:12, :24]) and "output channels 16 -> 12" in note
    halves, note = adapt_tensor(source, target, TensorRole(conv=True, concat_input=True))
    assert torch.equal(halves[:, :12], source[:12, :12]) and torch.equal(halves[:, 12:], source[:12, 16:28])
    assert "per concatenated half" in note
    grown = copy_overlap(torch.ones(3), torch.zeros(5))
    assert grown.tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(NotAdaptable, match="dimensions"):
        adapt_tensor(torch.zeros(3, 3), torch.zeros(3, 3, 3))


def test_first_conv_input_channels_use_the_timm_rule_also_with_another_kernel():
    source = torch.randn(8, 1, 3, 3, 3)
    value, note = adapt_tensor(source, torch.zeros(8, 2, 1, 3, 3), TensorRole(conv=True, first_conv=True))
    torch.testing.assert_close(value.sum(1, keepdim=True), source.mean(2, keepdim=True))
    assert "input channels 1 -> 2" in note and "kernel" in note


def test_options_are_validated():
    with pytest.raises(ValueError, match="kernel_reduce"):
        AdaptOptions(kernel_reduce="median")
    with pytest.raises(ValueError, match="kernel_grow"):
        PretrainedRecord.from_dict({"checkpoint": "x.pth", "kernel_grow": "zeros"})


def test_stage_matching_by_position_and_resolution():
    source = _unet((8, 16, 24, 32)).state_dict()
    match = match_stages(source, _unet((8, 16, 24)).state_dict().keys())
    assert "encoder.stages.3.0.convs.0.conv.weight" in match.surplus
    # the 4-stage decoder's stage 2 works at full resolution, like the 3-stage decoder's stage 1
    assert torch.equal(match.state_dict["decoder.stages.1.convs.0.conv.weight"],
                       source["decoder.stages.2.convs.0.conv.weight"])
    assert torch.equal(match.state_dict["decoder.transpconvs.0.weight"], source["decoder.transpconvs.1.weight"])
    assert "decoder.stages.0.convs.0.conv.weight" in match.surplus
    assert any("by resolution" in n for n in match.notes)


@torch.no_grad()
def test_target_with_its_own_plans_first_kernel_1x3x3_one_stage_fewer_nothing_skipped():
    torch.manual_seed(3)
    source_net = _unet((8, 16, 24, 32))
    source = source_net.state_dict()
    target = _unet((8, 16, 24), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    report = transfer_weights(target, source)
    assert report.n_shape_mismatched == 0 and report.n_missing == 0
    assert report.reinitialised and all(".seg_layers." in k for k in report.reinitialised)
    adapted = dict(report.adapted)
    first = "encoder.stages.0.0.convs.0.conv.weight"
    assert "kernel [3, 3, 3] -> [1, 3, 3]" in adapted[first]
    torch.testing.assert_close(target.state_dict()[first], source[first].mean(2, keepdim=True))
    assert "transposed-conv stride [2, 2, 2] -> [1, 2, 2]" in adapted["decoder.transpconvs.1.weight"]
    assert report.surplus and all(".stages.3." in k or "decoder.stages.0." in k or "transpconvs.0" in k
                                  or "seg_layers.0" in k for k in report.surplus)
    statuses = {v["status"] for v in report.tensor_status().values()}
    assert statuses == {"loaded", "adapted", "new"}
    summary = report.to_json()["summary"]
    assert summary["shape_mismatched"] == 0 and summary["adapted"] == len(report.adapted) > 0
    assert "matched by position" in str(report)


@torch.no_grad()
def test_deeper_target_keeps_new_stages_and_feature_caps_copy_the_overlap():
    source = _unet((8, 16, 24)).state_dict()
    target = _unet((8, 16, 20, 28))
    report = transfer_weights(target, source)
    assert report.n_shape_mismatched == 0
    assert any(k.startswith("encoder.stages.3.") for k in report.missing)
    assert any(k.startswith("decoder.stages.0.") for k in report.missing)  # the new lowest resolution
    assert "output channels 24 -> 20" in dict(report.adapted)["encoder.stages.2.0.convs.0.conv.weight"]
    loaded = target.state_dict()["encoder.stages.2.0.convs.0.conv.weight"]
    assert torch.equal(loaded, source["encoder.stages.2.0.convs.0.conv.weight"][:20])


@torch.no_grad()
def test_residual_encoder_unet_adapts_too_and_strict_mode_skips_with_the_reason():
    source = _unet((8, 16, 24), residual=True).state_dict()
    target = _unet((8, 16, 24), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], residual=True)
    report = transfer_weights(target, source)
    assert report.n_shape_mismatched == 0 and "encoder.stem.convs.0.conv.weight" in dict(report.adapted)
    strict = transfer_weights(_unet((8, 16, 24), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], residual=True), source,
                              adapt=AdaptOptions(enabled=False))
    assert strict.n_shape_mismatched > 0 and not strict.adapted
    assert strict.tensor_status()["encoder.stem.convs.0.conv.weight"]["status"] == "skipped"


@torch.no_grad()
def test_plans_record_carries_the_rules(tmp_path):
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": _unet((8, 16, 24)).state_dict()}, ckpt)
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    write_record(plans, "3d_fullres", PretrainedRecord(checkpoint=str(ckpt), kernel_reduce="sum"))
    record = read_record(json.loads(plans.read_text())["configurations"]["3d_fullres"])
    target = _unet((8, 16, 24), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])
    transfer_from_record(target, record)
    source = torch.load(ckpt, weights_only=True)["network_weights"]
    key = "encoder.stages.0.0.convs.0.conv.weight"
    torch.testing.assert_close(target.state_dict()[key], source[key].sum(2, keepdim=True))


def test_input_convolutions_come_from_keys_to_in_proj_or_the_first_conv_of_other_networks():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    from nnunet_transfer.transfer.adapt import input_projection_keys, tensor_roles

    unet = PlainConvUNet(1, 2, [4, 8], nn.Conv3d, 3, [1, 2], 1, 2, 1, norm_op=nn.InstanceNorm3d)
    assert input_projection_keys(unet) == tuple(unet.keys_to_in_proj)
    first = {k for k, r in tensor_roles(unet).items() if r.first_conv}
    assert first == {f"{k}.weight" for k in unet.keys_to_in_proj}
    foreign = nn.Sequential(nn.Identity(), nn.Conv3d(1, 4, 3), nn.Conv3d(4, 4, 3))  # no convention: first conv
    assert input_projection_keys(foreign) == ("1",)
    assert [k for k, r in tensor_roles(foreign).items() if r.first_conv] == ["1.weight"]
