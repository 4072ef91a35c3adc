"""The public brain-MRI U-Net (mateuszbuda/brain-segmentation-pytorch) the attention paper fine-tunes: our network has
the release's keys and shapes, the ``brain-unet`` format reads ``unet.pt``, and its weights load into the gated
network (>= 95 % of the parameters) with a per-tensor report."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from support.brain_unet_release import release_shapes, release_state_dict

from nnunet_transfer.architectures.brain_unet import BrainUNet
from nnunet_transfer.pretrained.formats import registered_formats
from nnunet_transfer.pretrained.formats.brain_unet import BRAIN_UNET_HEAD, FORMAT
from nnunet_transfer.transfer.weights import transfer_weights


def test_release_layout_and_our_network_agree():
    shapes = release_shapes()
    assert len(shapes) == 118
    # keys and shapes as the repository's unet.py names them (in 3, out 1, init_features 32)
    assert shapes["encoder1.enc1conv1.weight"] == (32, 3, 3, 3)
    assert shapes["bottleneck.bottleneckconv2.weight"] == (512, 512, 3, 3)
    assert shapes["upconv4.weight"] == (512, 256, 2, 2)
    assert shapes["decoder4.dec4conv1.weight"] == (256, 512, 3, 3)
    assert shapes["decoder1.dec1norm2.running_var"] == (32,) and shapes["conv.weight"] == (1, 32, 1, 1)
    ours = {k: tuple(v.shape) for k, v in BrainUNet(3, 1).state_dict().items()}
    assert ours == dict(shapes)
    net = BrainUNet(3, 2)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_format_reads_the_release_file(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(release_state_dict(), path)
    obj = torch.load(path, weights_only=True)
    assert FORMAT in registered_formats() and FORMAT.detect(obj)
    assert not FORMAT.detect(BrainUNet(3, 1, attention_gates=True).encoder1.state_dict())
    reading = FORMAT.read({f"module.{k}": v for k, v in obj.items()}, str(path))  # a DataParallel copy reads too
    assert len(reading.tensors) == 116 and reading.filtered == list(BRAIN_UNET_HEAD)
    assert reading.metadata["init_features"] == 32 and reading.metadata["in_channels"] == 3
    assert reading.metadata["out_channels"] == 1 and any("sigmoid output" in n for n in reading.notes)
    with pytest.raises(ValueError, match="not a brain-segmentation-pytorch U-Net"):
        FORMAT.read({"conv.weight": torch.zeros(1)}, "other.pt")


@pytest.mark.parametrize("gates", [True, False])
def test_release_weights_load_into_the_fine_tuning_network(tmp_path, gates):
    from nnunet_transfer.trainers import AttentionUNetTrainer_brainUNet

    path = tmp_path / "unet.pt"
    release = release_state_dict(seed=1)
    torch.save(release, path)
    net = BrainUNet(3, 2, attention_gates=gates, input_from_unit_range=True)
    report = transfer_weights(net, path, exclude=BRAIN_UNET_HEAD,
                              head_patterns=AttentionUNetTrainer_brainUNet.new_layer_patterns)
    assert report.fraction_loaded >= (0.95 if gates else 0.999)
    status = report.tensor_status()
    state = net.state_dict()
    for key, value in release.items():
        if key in BRAIN_UNET_HEAD:
            assert status[key]["status"] == "new"
            continue
        assert status[key]["status"] == "loaded", (key, status[key])
        assert torch.equal(state[key], value)
    gate_keys = [k for k in state if k.startswith("attention_gates.")]
    assert bool(gate_keys) == gates and all(status[k]["status"] == "new" for k in gate_keys)
    assert "re-initialised" in str(report)


def test_input_range_mapping_and_trainer_network():
    from nnunet_transfer.trainers import AttentionUNetTrainer_brainUNet, AttentionUNetTrainer_brainUNetNoGates

    torch.manual_seed(0)
    mapped = BrainUNet(3, 2, input_from_unit_range=True).eval()
    plain = BrainUNet(3, 2).eval()
    plain.load_state_dict(mapped.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(mapped(x), plain(2 * x - 1))

    cfg = {"patch_size": [64, 80], "spacing": [1.0, 1.0], "batch_size": 2, "data_identifier": "d",
           "preprocessor_name": "DefaultPreprocessor", "normalization_schemes": ["RGBTo01Normalization"] * 3,
           "use_mask_for_norm": [False] * 3, "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                              "_kw_requires_import": []}}
    net = AttentionUNetTrainer_brainUNet.build_network_architecture(None, ConfigurationManager(cfg), 3, 2)
    assert isinstance(net, BrainUNet) and net.attention_gates is not None and net.input_from_unit_range
    zscored = dict(cfg, normalization_schemes=["ZScoreNormalization"] * 3)
    net = AttentionUNetTrainer_brainUNetNoGates.build_network_architecture(None, ConfigurationManager(zscored), 3, 2)
    assert net.attention_gates is None and not net.input_from_unit_range
    with pytest.raises(RuntimeError, match="multiple of 16"):
        AttentionUNetTrainer_brainUNet.build_network_architecture(None, ConfigurationManager(
            dict(cfg, patch_size=[60, 80])), 3, 2)
