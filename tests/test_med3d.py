"""Med3D encoder: MedicalNet layout, safe loading of MedicalNet checkpoints, registry verification."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nnunet_transfer.architectures.med3d import (
    DEFAULT_SHORTCUT,
    RESNET_LAYOUTS,
    Med3DResNet,
    ZeroPadShortcut,
)
from nnunet_transfer.pretrained.registry import get_checkpoint, list_checkpoints
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, UnsafeCheckpointError, read_checkpoint_file
from nnunet_transfer.transfer.loading import adapt_input_channels
from nnunet_transfer.transfer.medicalnet import ArchitectureMismatchError, infer_medicalnet_architecture, load_medicalnet
from nnunet_transfer.transfer.verify import verify_checkpoint

from support.booby_trap import Payload

KEYS_JSON = Path(__file__).parent / "data" / "medicalnet_state_dict_keys.json"


def _medicalnet_file(path: Path, state: dict, head: bool = True, legacy: bool = False) -> Path:
    """Write a checkpoint the way MedicalNet released them: {'state_dict': {'module.<key>': tensor}}."""
    wrapped = {"module." + k: v for k, v in state.items()}
    if head:  # MedicalNet's segmentation head, which the encoder must ignore
        wrapped["module.conv_seg.0.weight"] = torch.randn(8, 4, 2, 2, 2)
        wrapped["module.conv_seg.4.weight"] = torch.randn(2, 4, 1, 1, 1)
    torch.save({"state_dict": wrapped}, path, _use_new_zipfile_serialization=not legacy)
    return path


def _seeded_encoder(depth: int, seed: int = 0, **kw) -> Med3DResNet:
    torch.manual_seed(seed)
    enc = Med3DResNet(depth=depth, **kw)
    with torch.no_grad():  # non-trivial BN statistics so that loading them is observable
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.num_batches_tracked.fill_(7)
    return enc


# ----------------------------------------------------------------------------------------------------------------
# architecture


@pytest.mark.parametrize("depth,name", [(10, "resnet10_B"), (18, "resnet18_A"), (50, "resnet50_B")])
def test_state_dict_keys_and_shapes_equal_released_checkpoints(depth, name):
    expected = [(k, list(s)) for k, s in json.loads(KEYS_JSON.read_text())[name]]
    with torch.device("meta"):
        enc = Med3DResNet(depth=depth)
    ours = [(k, list(v.shape)) for k, v in enc.state_dict().items()]
    assert ours == expected  # same keys, same shapes, same order
    assert enc.shortcut_type == name[-1]


def test_layout_details_follow_medicalnet():
    with torch.device("meta"):  # structure only
        enc = Med3DResNet(depth=50)
    assert enc.conv1.kernel_size == (7, 7, 7) and enc.conv1.stride == (2, 2, 2) and enc.conv1.padding == (3, 3, 3)
    assert enc.maxpool.kernel_size == 3 and enc.maxpool.stride == (2, 2, 2) and enc.maxpool.padding == 1
    assert all(m.bias is None for m in enc.modules() if isinstance(m, torch.nn.Conv3d))
    b = enc.layer2[0]  # Bottleneck: stride on the 3x3x3 conv, 1x1x1 convs unstrided
    assert b.conv1.stride == (1, 1, 1) and b.conv2.stride == (2, 2, 2) and b.conv3.stride == (1, 1, 1)
    assert b.downsample[0].stride == (2, 2, 2) and b.downsample[0].kernel_size == (1, 1, 1)
    for layer, dilation in ((enc.layer3, 2), (enc.layer4, 4)):
        for block in layer:  # dilation in every block, stride 1, padding = dilation
            assert block.conv2.dilation == (dilation,) * 3 and block.conv2.padding == (dilation,) * 3
            assert block.conv2.stride == (1, 1, 1)
    basic = Med3DResNet(depth=18)
    assert basic.layer3[1].conv1.dilation == (2, 2, 2) and basic.layer3[1].conv2.dilation == (2, 2, 2)
    assert isinstance(basic.layer2[0].downsample, ZeroPadShortcut) and basic.layer1[0].downsample is None
    assert isinstance(basic.layer3[0].downsample, ZeroPadShortcut)  # channels change at stride 1
    assert enc.output_channels == [64, 256, 512, 1024, 2048]
    assert basic.output_channels == [64, 64, 128, 256, 512]


def test_zero_pad_shortcut_matches_medicalnet_and_passes_gradient():
    x = torch.randn(2, 3, 5, 6, 7, requires_grad=True)
    out = ZeroPadShortcut(8, 2)(x)
    ref = F.avg_pool3d(x, kernel_size=1, stride=2)  # MedicalNet's downsample_basic_block
    assert out.shape == (2, 8, 3, 3, 4)
    assert torch.equal(out[:, :3], ref) and torch.count_nonzero(out[:, 3:]) == 0
    out.sum().backward()
    assert x.grad[:, :, ::2, ::2, ::2].eq(1).all() and x.grad.sum() == ref.numel()


@pytest.mark.parametrize("depth", [10, 18])
def test_forward_backward_on_odd_patch(depth):
    torch.manual_seed(0)
    enc = Med3DResNet(depth=depth)
    x = torch.randn(1, 1, 19, 23, 21)
    feats = enc.forward_features(x)
    assert len(feats) == 5
    for f, stride, ch in zip(feats, enc.cumulative_strides, enc.output_channels):
        assert list(f.shape) == [1, ch] + [math.ceil(n / s) for n, s in zip((19, 23, 21), stride[:3])]
    assert enc.cumulative_strides == [[2] * 3, [4] * 3, [8] * 3, [8] * 3, [8] * 3]
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    assert enc.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("depth", [5, 7, 8])
def test_conv1_gradient_is_right_for_thin_inputs(depth):
    """torch's CPU conv3d weight gradient is garbage for this conv when depth is 5-7; we work around it."""
    torch.manual_seed(depth)
    enc = Med3DResNet(depth=10, in_channels=2)
    x = torch.randn(1, 2, depth, 12, 10)
    y = enc._conv1(x)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, enc.conv1.weight, g)
    w64 = enc.conv1.weight.detach().double().requires_grad_()
    y64 = F.conv3d(x.double(), w64, stride=2, padding=3)
    (grad64,) = torch.autograd.grad(y64, w64, g.double())
    assert y.shape == y64.shape and torch.allclose(y.double(), y64, atol=1e-4)
    assert torch.allclose(grad.double(), grad64, atol=1e-3)


@pytest.mark.parametrize("depth", [50] + [pytest.param(d, marks=pytest.mark.slow) for d in (34, 101, 152, 200)])
def test_every_depth_builds_and_runs(depth):
    enc = Med3DResNet(depth=depth, in_channels=2).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 2, 9, 11, 10))
    assert [f.shape[1] for f in feats] == enc.output_channels
    assert [list(f.shape[2:]) for f in feats] == [[5, 6, 5], [3, 3, 3], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert enc.shortcut_type == DEFAULT_SHORTCUT[depth]
    enc.return_skips = False
    with torch.no_grad():
        assert enc(torch.randn(1, 2, 9, 11, 10)).shape[1] == enc.output_channels[-1]


def test_every_depth_propagates_shapes():
    """All seven depths, shapes only (meta tensors): the numeric forward of 101/152/200 is a slow test."""
    for depth in sorted(RESNET_LAYOUTS):
        with torch.device("meta"), torch.no_grad():
            enc = Med3DResNet(depth=depth, in_channels=3).eval()
            feats = enc.forward_features(torch.empty(2, 3, 9, 11, 10))
        assert [list(f.shape) for f in feats] == [[2, c, *s] for c, s in zip(
            enc.output_channels, ([5, 6, 5], [3, 3, 3], [2, 2, 2], [2, 2, 2], [2, 2, 2]))], depth
        assert len(enc.layer3) == RESNET_LAYOUTS[depth][1][2]


def test_decoder_attributes_let_dynamic_network_architectures_decoder_sit_on_top():
    from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder

    enc = Med3DResNet(depth=10)
    for attr in ("output_channels", "strides", "kernel_sizes", "conv_op", "norm_op", "norm_op_kwargs", "nonlin",
                 "nonlin_kwargs", "dropout_op", "dropout_op_kwargs", "conv_bias", "return_skips"):
        assert hasattr(enc, attr), attr
    assert enc.strides == [[2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1]]
    dec = UNetDecoder(enc, num_classes=3, n_conv_per_stage=1, deep_supervision=True)
    outs = dec(enc(torch.randn(1, 1, 16, 16, 16)))
    assert [list(o.shape) for o in outs] == [[1, 3, 8, 8, 8], [1, 3, 4, 4, 4], [1, 3, 2, 2, 2], [1, 3, 2, 2, 2]]


def test_anisotropic_strides_keep_weight_shapes():
    enc = Med3DResNet(depth=10, strides=((1, 2, 2), (1, 2, 2), 2))
    ref = Med3DResNet(depth=10)
    assert {k: v.shape for k, v in enc.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    feats = enc.forward_features(torch.randn(1, 1, 6, 16, 16))
    assert [list(f.shape[2:]) for f in feats] == [[6, 8, 8], [6, 4, 4], [3, 2, 2], [3, 2, 2], [3, 2, 2]]


# ----------------------------------------------------------------------------------------------------------------
# loading MedicalNet checkpoints


@pytest.mark.parametrize("legacy", [False, True])
def test_load_medicalnet_checkpoint_loads_everything(tmp_path, legacy):
    src = _seeded_encoder(10, seed=1)
    path = _medicalnet_file(tmp_path / "resnet_10.pth", src.state_dict(), legacy=legacy)
    enc = Med3DResNet(depth=10)
    report = load_medicalnet(enc, path)
    assert report.n_missing == 0 and report.n_unexpected == 0 and report.n_shape_mismatched == 0
    assert report.n_loaded == 72 and report.complete
    assert sorted(report.skipped) == ["conv_seg.0.weight", "conv_seg.4.weight"]
    assert report.fraction_loaded == 1.0
    for k, v in src.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v), k
    text = str(report)
    assert "loaded" in text and "72" in text and "100.0%" in text
    src.eval(), enc.eval()
    x = torch.randn(1, 1, 9, 9, 9)
    with torch.no_grad():
        assert torch.allclose(src(x)[-1], enc(x)[-1])


def test_load_bare_state_dict_file_and_in_memory(tmp_path):
    src = _seeded_encoder(10, seed=2)
    torch.save(src.state_dict(), tmp_path / "bare.pth")
    enc = Med3DResNet(depth=10)
    assert load_medicalnet(enc, tmp_path / "bare.pth").complete
    assert torch.equal(enc.layer4[0].bn2.running_var, src.layer4[0].bn2.running_var)
    enc2 = Med3DResNet(depth=10)
    report = load_medicalnet(enc2, {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}})
    assert report.complete and torch.equal(enc2.conv1.weight, src.conv1.weight)


def test_load_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    src = _seeded_encoder(10, seed=3)
    path = tmp_path / "resnet_10.safetensors"
    safetensors_torch.save_file({"module." + k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    enc = Med3DResNet(depth=10)
    assert load_medicalnet(enc, path).complete
    assert torch.equal(enc.layer3[0].downsample[0].weight, src.layer3[0].downsample[0].weight)


@pytest.mark.parametrize("file_depth,file_shortcut,model_depth,model_shortcut,expected",
                         [(18, "A", 10, "B", "ResNet-18"), (50, "B", 10, "B", "ResNet-50"),
                          (10, "B", 10, "A", "shortcut B"), (34, "A", 18, "A", "ResNet-34")])
def test_wrong_depth_or_shortcut_fails_with_clear_message(file_depth, file_shortcut, model_depth, model_shortcut,
                                                          expected):
    with torch.device("meta"):  # only keys matter for this check
        state = Med3DResNet(depth=file_depth, shortcut_type=file_shortcut).state_dict()
    enc = Med3DResNet(depth=model_depth, shortcut_type=model_shortcut)
    with pytest.raises(ArchitectureMismatchError) as info:
        load_medicalnet(enc, {"state_dict": {"module." + k: v for k, v in state.items()}})
    msg = str(info.value)
    assert expected in msg
    assert f"Med3DResNet(depth={file_depth}, shortcut_type='{file_shortcut}')" in msg  # how to fix it


def test_infer_architecture_from_keys_for_every_depth():
    for depth, (block, layers) in RESNET_LAYOUTS.items():
        for shortcut in ("A", "B"):
            with torch.device("meta"):
                state = Med3DResNet(depth=depth, shortcut_type=shortcut, in_channels=3).state_dict()
            arch = infer_medicalnet_architecture(state)
            assert (arch.depth, arch.block, arch.layers, arch.shortcut_type, arch.in_channels) == \
                   (depth, block, layers, shortcut, 3)
    with pytest.raises(CheckpointFormatError, match="not a MedicalNet 3D ResNet"):
        infer_medicalnet_architecture({"encoder.stages.0.weight": torch.zeros(1)})


def test_pickled_custom_object_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    sd = {"module." + k: v for k, v in Med3DResNet(depth=10).state_dict().items()}
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": sd, "arch": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_medicalnet(Med3DResNet(depth=10), path)
    assert str(path) in str(info.value) and "weights_only" in str(info.value)
    assert not marker.exists()
    report = verify_checkpoint(path)
    assert not report.ok and any(c == "loads safely" and not p for c, p, _ in report.checks)
    assert not marker.exists()


def test_missing_file_and_non_checkpoint_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint_file(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointFormatError, match="list.pth"):
        load_medicalnet(Med3DResNet(depth=10), tmp_path / "list.pth")


@pytest.mark.parametrize("in_channels", [2, 3])
def test_multi_channel_input_adapts_conv1(tmp_path, in_channels):
    src = _seeded_encoder(10, seed=4)
    path = _medicalnet_file(tmp_path / "resnet_10.pth", src.state_dict())
    enc = Med3DResNet(depth=10, in_channels=in_channels)
    report = load_medicalnet(enc, path)
    assert report.complete and len(report.adapted) == 1 and report.adapted[0][0] == "conv1.weight"
    assert f"1 -> {in_channels}" in str(report)
    w = src.conv1.weight
    assert torch.allclose(enc.conv1.weight, w.repeat(1, in_channels, 1, 1, 1) / in_channels)
    x = torch.randn(1, 1, 9, 10, 11)  # same image in every channel -> same first-layer response
    assert torch.allclose(enc.conv1(x.repeat(1, in_channels, 1, 1, 1)), src.conv1(x), atol=1e-5)


def test_adapt_input_channels_general_cases():
    w = torch.randn(4, 2, 3, 3, 3)
    five = adapt_input_channels(w, 5)
    assert five.shape == (4, 5, 3, 3, 3)
    assert torch.allclose(five[:, 2], w[:, 0] * 2 / 5) and torch.allclose(five[:, 3], w[:, 1] * 2 / 5)
    assert torch.allclose(adapt_input_channels(w, 1), w.sum(1, keepdim=True))
    assert torch.equal(adapt_input_channels(w, 2), w)


def test_strict_shapes_raises_and_non_strict_skips(tmp_path):
    state = dict(_seeded_encoder(10, seed=5).state_dict())
    state["layer1.0.bn1.weight"] = torch.ones(32)
    with pytest.raises(ValueError, match="layer1.0.bn1.weight"):
        load_medicalnet(Med3DResNet(depth=10), state)
    report = load_medicalnet(Med3DResNet(depth=10), state, strict_shapes=False)
    assert report.shape_mismatched == [("layer1.0.bn1.weight", (32,), (64,))]
    assert report.n_loaded == 71 and report.n_missing == 0 and 0.99 < report.fraction_loaded < 1.0


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_records_describe_buildable_architectures():
    records = list_checkpoints()
    assert len(records) == 11
    names = {r.file_name for r in records}
    assert {"resnet_50_23dataset.pth", "resnet_200.pth", "resnet_18_23dataset.pth"} <= names
    for r in records:
        assert r.shortcut_type == DEFAULT_SHORTCUT[r.depth]
        assert r.pretraining_data == ("23 datasets" if "23dataset" in r.file_name else "8 datasets")
        assert r.sha256 is None  # MedicalNet publishes no checksums; we record none we have not verified
        assert any("drive.google.com" in s for s in r.sources) and any("weiyun" in s for s in r.sources)
        with torch.device("meta"):
            n_bytes = sum(v.numel() * v.element_size() for v in Med3DResNet(depth=r.depth, shortcut_type=r.shortcut_type).state_dict().values())
        assert abs(n_bytes / 1e6 - r.size_mb) < 0.5
    assert get_checkpoint("resnet_34_23dataset").depth == 34
    with pytest.raises(KeyError, match="known files"):
        get_checkpoint("resnet_99.pth")


def test_verify_checkpoint_passes_and_fails_for_the_right_reasons(tmp_path):
    good = _medicalnet_file(tmp_path / "resnet_10.pth", Med3DResNet(depth=10).state_dict())
    report = verify_checkpoint(good)
    assert report.ok, str(report)
    assert [c for c, _, _ in report.checks] == ["registered", "loads safely", "architecture", "keys and shapes"]
    assert report.sha256 is not None and len(report.sha256) == 64 and report.sha256 in str(report)

    record = dataclasses.replace(get_checkpoint("resnet_10.pth"), sha256="0" * 64)
    bad_hash = verify_checkpoint(good, record=record)
    assert not bad_hash.ok and bad_hash.checks[-1][0] == "sha256" and not bad_hash.checks[-1][1]
    ok_hash = verify_checkpoint(good, record=dataclasses.replace(record, sha256=report.sha256))
    assert ok_hash.ok

    with torch.device("meta"):
        sd18 = Med3DResNet(depth=18).state_dict()
    wrong = tmp_path / "resnet_10_renamed.pth"
    torch.save({"state_dict": {"module." + k: torch.zeros(v.shape) for k, v in sd18.items()}}, wrong)
    wrong_report = verify_checkpoint(wrong, record="resnet_10.pth")
    assert not wrong_report.ok and "ResNet-18" in str(wrong_report)
    with pytest.raises(ValueError, match="architecture"):
        wrong_report.raise_if_failed()

    unregistered = verify_checkpoint(wrong)
    assert not unregistered.checks[0][1] and "record=" in unregistered.checks[0][2]
