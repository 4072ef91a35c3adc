"""extract-encoder: the encoder of nnU-Net, MOTS, residual and MedicalNet checkpoints as a plain state dict."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.architectures.dynamic_head import DynamicHeadNetwork
from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.cli.main import main
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, read_checkpoint_file
from nnunet_transfer.transfer.encoder_export import encoder_state_dict, extract_encoder
from nnunet_transfer.transfer.weights import transfer_weights


def _unet(cls=PlainConvUNet, classes=3):
    return cls(1, 3, [8, 16, 24], nn.Conv3d, 3, [1, 2, 2], 1, classes, 1, True, nn.InstanceNorm3d, {"affine": True},
               None, None, nn.LeakyReLU, {"inplace": True})


@pytest.fixture
def mots_checkpoint(tmp_path):
    backbone = _unet(classes=8)
    net = DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index())
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": net.state_dict(), "trainer_name": "MOTSPretrainTrainer"}, path)
    return path, net.state_dict()


def test_mots_encoder_to_pth_loads_as_data_and_transfers(mots_checkpoint, tmp_path):
    path, source = mots_checkpoint
    out = extract_encoder(path, tmp_path / "encoder.pth")
    saved = torch.load(out, weights_only=True)
    assert isinstance(saved, dict) and saved and all(k.startswith("encoder.") for k in saved)
    assert set(saved) == {k for k in source if k.startswith("encoder.")}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    target = _unet()
    report = transfer_weights(target, out)
    assert not [k for k in report.missing if k.startswith("encoder.")]
    assert all(torch.equal(target.state_dict()[k], v) for k, v in saved.items())


def test_safetensors_output_and_stripped_names(mots_checkpoint, tmp_path):
    pytest.importorskip("safetensors")
    path, source = mots_checkpoint
    out = extract_encoder(path, tmp_path / "encoder.safetensors", strip_prefix=True)
    saved = read_checkpoint_file(out)
    assert "stages.0.0.convs.0.conv.weight" in saved
    assert torch.equal(saved["stages.0.0.convs.0.conv.weight"], source["encoder.stages.0.0.convs.0.conv.weight"])


def test_residual_encoder_keeps_its_stem_and_medicalnet_drops_its_head(tmp_path):
    residual = encoder_state_dict(_unet(ResidualEncoderUNet).state_dict())
    assert any(k.startswith("encoder.stem.") for k in residual)
    resnet = Med3DResNet(depth=10, shortcut_type="B")
    state = {"module." + k: v for k, v in resnet.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "resnet_10.pth")
    encoder = encoder_state_dict(tmp_path / "resnet_10.pth")
    assert set(encoder) == set(resnet.state_dict())


def test_refusals_leave_files_alone(mots_checkpoint, tmp_path):
    path, _ = mots_checkpoint
    existing = tmp_path / "encoder.pth"
    existing.write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        extract_encoder(path, existing)
    assert existing.read_text() == "keep me"
    with pytest.raises(ValueError, match="must end in"):
        extract_encoder(path, tmp_path / "encoder.npz")
    with pytest.raises(CheckpointFormatError, match="no encoder tensors"):
        encoder_state_dict({"fc.weight": torch.zeros(2, 2)})


def test_cli(mots_checkpoint, tmp_path, capsys):
    path, _ = mots_checkpoint
    assert main(["extract-encoder", str(path), "-o", str(tmp_path / "e.pth")]) == 0
    assert "encoder tensors" in capsys.readouterr().out
    assert main(["extract-encoder", str(path), "-o", str(tmp_path / "e.pth")]) == 1
