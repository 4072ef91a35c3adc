"""Med3D-style pretraining network and its encoder files (unit tests; the trainer runs in test_e2e_med3d_mleam)."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.architectures.med3d_branches import Med3DBranchNetwork
from nnunet_transfer.architectures.task_conditioned import NOT_EVALUATED_LOGIT
from nnunet_transfer.cli.main import main
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.transfer.medicalnet import load_medicalnet
from nnunet_transfer.transfer.verify import verify_checkpoint
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError
from nnunet_transfer.trainers import Med3DPretrainTrainer, __all__ as registered_trainers
from nnunet_transfer.trainers.med3d_pretrain import encoder_file_name
from nnunet_transfer.trainers.mots_pretrain import MOTSPretrainTrainer
from nnunet_transfer.transfer.encoder_export import extract_encoder
from nnunet_transfer.transfer.weights import transfer_weights


def _plain_unet(classes: int = 2) -> PlainConvUNet:
    return PlainConvUNet(1, 3, [8, 16, 24], nn.Conv3d, 3, [1, 2, 2], 1, classes, 1, True, nn.InstanceNorm3d,
                         {"affine": True}, None, None, nn.LeakyReLU, {"inplace": True})


def _network(encoder: nn.Module) -> Med3DBranchNetwork:
    return Med3DBranchNetwork(encoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index(),
                              mots_tasks.HEAD_OUTPUTS_PER_TASK)


@pytest.fixture(scope="module")
def resnet_network() -> Med3DBranchNetwork:
    torch.manual_seed(0)
    return _network(Med3DResNet(depth=10))


def test_branch_per_task_on_the_deepest_features():
    net = _network(_plain_unet().encoder)
    assert len(net.decoder.branches) == mots_tasks.NUM_TASKS
    for branch in net.decoder.branches:
        assert isinstance(branch, nn.Conv3d) and branch.kernel_size == (1, 1, 1)
        assert branch.in_channels == 24 and branch.out_channels == mots_tasks.HEAD_OUTPUTS_PER_TASK
    assert all(k.startswith(("encoder.", "decoder.branches.")) for k in net.state_dict())


@pytest.mark.parametrize("which", ["resnet", "plain"])
def test_forward_shapes_full_resolution(which, resnet_network):
    net = resnet_network if which == "resnet" else _network(_plain_unet().encoder)
    x = torch.randn(2, 1, 12, 16, 16)  # odd-ish, anisotropic patch: the output still has the input's size
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, mots_tasks.NUM_OUTPUT_CHANNELS, 12, 16, 16)
        tasks = torch.tensor([0, 6])
        with net.conditioned_on(tasks):
            own = net(x)
    assert own.shape == out.shape
    for n, task in enumerate(tasks.tolist()):
        for ch in mots_tasks.OUTPUT_CHANNELS:
            if ch.task == task:  # own channels: the same logits as the all-task pass
                torch.testing.assert_close(own[n, ch.index], out[n, ch.index])
            else:
                assert torch.all(own[n, ch.index] == NOT_EVALUATED_LOGIT)


def test_branch_is_a_1x1x1_conv_upsampled_to_the_input():
    net = _network(_plain_unet().encoder)
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        low = net.decoder.branches[1](net.deepest_features(x))
        expected = torch.nn.functional.interpolate(low, size=[8, 16, 16], mode="trilinear", align_corners=False)
        out = net(x)
    kidney = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == 1]
    torch.testing.assert_close(out[0, kidney], expected[0])


def test_only_the_own_branch_gets_gradient():
    net = _network(_plain_unet().encoder)
    with net.conditioned_on(torch.tensor([3, 3, 5])):
        out = net(torch.randn(3, 1, 8, 16, 16))
    channels = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task in (3, 5)]
    out[:, channels].sigmoid().sum().backward()
    for task, branch in enumerate(net.decoder.branches):
        if task in (3, 5):
            assert branch.weight.grad is not None and branch.weight.grad.abs().sum() > 0
        else:  # ran on no sample: an exact zero gradient (DDP needs one); the trainer's optimiser skips it
            assert not branch.weight.grad.any() and not branch.bias.grad.any()
    assert all(p.grad is not None for p in net.encoder.parameters())


def test_resnet_encoder_file_is_medicalnet_format(resnet_network, tmp_path):
    name = encoder_file_name(resnet_network)
    assert name == "med3d_resnet10_encoder_medicalnet.pth"
    path = extract_encoder(resnet_network.state_dict(), tmp_path / name, layout="medicalnet")
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"state_dict"}
    assert all(k.startswith("module.") for k in saved["state_dict"])
    expected = resnet_network.encoder.state_dict()
    assert set(saved["state_dict"]) == {"module." + k for k in expected}
    fresh = Med3DResNet(depth=10)
    report = load_medicalnet(fresh, path)  # the loader of released MedicalNet files
    assert report.complete and not report.missing and not report.unexpected and not report.shape_mismatched
    assert sorted(report.loaded) == sorted(expected)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    verification = verify_checkpoint(path, record="resnet_10.pth", compute_sha256=False)
    assert all(passed for check, passed, _ in verification.checks if check != "sha256"), str(verification)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_plain_encoder_file_transfers_to_the_plans_unet(tmp_path):
    net = _network(_plain_unet().encoder)
    assert encoder_file_name(net) == "encoder.pth"
    path = extract_encoder(net.state_dict(), tmp_path / "encoder.pth")
    saved = torch.load(path, weights_only=True)
    assert saved and all(k.startswith("encoder.") for k in saved)
    report = transfer_weights(_plain_unet(classes=3), path)
    assert not [k for k in report.missing if k.startswith("encoder.")]
    assert not report.shape_mismatched
    with pytest.raises(CheckpointFormatError, match="not a Med3D ResNet"):
        extract_encoder(net.state_dict(), tmp_path / "medicalnet.pth", layout="medicalnet")
    assert not (tmp_path / "medicalnet.pth").exists()


def test_trainer_registered_and_reuses_the_mots_machinery():
    assert "Med3DPretrainTrainer" in registered_trainers
    assert issubclass(Med3DPretrainTrainer, MOTSPretrainTrainer)


def test_extract_encoder_cli_writes_the_medicalnet_layout(resnet_network, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": resnet_network.state_dict(), "trainer_name": "Med3DPretrainTrainer"}, checkpoint)
    out = tmp_path / "resnet10_medicalnet.pth"
    assert main(["extract-encoder", str(checkpoint), "-o", str(out), "--layout", "medicalnet"]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert load_medicalnet(Med3DResNet(depth=10), out).complete
