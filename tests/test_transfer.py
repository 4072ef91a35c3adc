"""Weight transfer: MOTS-style checkpoints into plain networks, input-channel adaptation, reports, plans records."""

import json

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_transfer.architectures.dynamic_head import DynamicHeadNetwork
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError
from nnunet_transfer.trainers.lr_schedulers import WarmupPolyLRScheduler
from nnunet_transfer.trainers.nnunet_invocation import pretrained_weights_argument
from nnunet_transfer.transfer.record import PretrainedRecord, read_record, write_record
from nnunet_transfer.transfer.weights import (TransferReport, nnunet_pretrained_weights_report, rename_prefixes,
                                              transfer_weights)


def _unet(in_channels=1, num_classes=4):
    return PlainConvUNet(in_channels, 3, [8, 16, 24], torch.nn.Conv3d, 3, [1, 2, 2], 1, num_classes, 1, True,
                         torch.nn.InstanceNorm3d, {"affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True})


def _mots_checkpoint(tmp_path, in_channels=1):
    torch.manual_seed(0)
    backbone = _unet(in_channels, num_classes=8)
    net = DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index())
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": net.state_dict(), "trainer_name": "MOTSPretrainTrainer"}, path)
    return path, net.state_dict()


def test_mots_checkpoint_into_plain_unet_replaces_head(tmp_path):
    path, source = _mots_checkpoint(tmp_path)
    target = _unet(num_classes=4)
    report = transfer_weights(target, path)
    assert report.n_missing == 0 and report.n_shape_mismatched == 0 and report.n_unexpected == 0
    assert report.reinitialised and all(".seg_layers." in k for k in report.reinitialised)
    assert "controller.weight" in report.skipped and any(".seg_layers." in k for k in report.skipped)
    for k, v in target.state_dict().items():
        if ".seg_layers." not in k:
            assert torch.equal(v, source[k]), k
    assert 0.9 < report.fraction_loaded < 1.0
    text = str(report)
    assert "re-initialised" in text and "parameters loaded" in text


def test_first_convolution_adapts_to_more_input_channels(tmp_path):
    path, source = _mots_checkpoint(tmp_path, in_channels=1)
    target = _unet(in_channels=3)
    report = transfer_weights(target, path)
    first = "encoder.stages.0.0.convs.0.conv.weight"
    assert [k for k, _ in report.adapted] == [first]
    adapted = target.state_dict()[first]
    assert adapted.shape[1] == 3
    torch.testing.assert_close(adapted.sum(1, keepdim=True), source[first])


def test_nnunet_path_report_and_refusal(tmp_path):
    path, _ = _mots_checkpoint(tmp_path)
    report = nnunet_pretrained_weights_report(_unet(num_classes=4), path)
    assert report.n_missing == 0 and "controller.weight" in report.unexpected
    with pytest.raises(KeyError, match="set-pretrained"):
        nnunet_pretrained_weights_report(_unet(in_channels=1, num_classes=4).encoder, path)


def test_wrong_checkpoint_fails_with_min_fraction(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(RuntimeError, match="only 0.0%"):
        transfer_weights(_unet(), path, min_fraction=0.5)


def test_pickled_code_is_refused(tmp_path):
    import argparse  # any importable class stands for code the unpickler would run

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": argparse.Namespace(a=1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        transfer_weights(_unet(), path)


def test_prefix_map_and_report_roundtrip(tmp_path):
    renamed = rename_prefixes({"conv1.weight": torch.zeros(1), "layer1.0.bn.weight": torch.zeros(1)},
                              {"": "encoder.", "layer1.": "encoder.stage1."})
    assert set(renamed) == {"encoder.conv1.weight", "encoder.stage1.0.bn.weight"}
    path, _ = _mots_checkpoint(tmp_path)
    report = transfer_weights(_unet(), path)
    json_path, txt_path = report.save(tmp_path / "out")
    again = TransferReport.load(json_path)
    assert again.loaded == report.loaded and again.reinitialised == report.reinitialised
    assert json.loads(json_path.read_text())["summary"]["loaded"] == report.n_loaded
    assert txt_path.read_text().startswith("weights from")


def test_plans_record_roundtrip(tmp_path):
    ckpt, _ = _mots_checkpoint(tmp_path)
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [8, 8, 8]}}}))
    write_record(plans, "3d_fullres", PretrainedRecord(checkpoint=str(ckpt), prefix_map={"": "encoder."}))
    record = read_record(json.loads(plans.read_text())["configurations"]["3d_fullres"])
    assert record.checkpoint == str(ckpt.resolve()) and record.prefix_map == {"": "encoder."}
    with pytest.raises(KeyError, match="2d"):
        write_record(plans, "2d", record)
    with pytest.raises(FileNotFoundError):
        write_record(plans, "3d_fullres", PretrainedRecord(checkpoint=str(tmp_path / "missing.pth")))
    write_record(plans, "3d_fullres", None)
    assert read_record(json.loads(plans.read_text())["configurations"]["3d_fullres"]) is None


def test_warmup_poly_schedule_and_group_scales():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr_scale": 0.1}, {"params": [p2]}], lr=1.0)
    sched = WarmupPolyLRScheduler(opt, 1e-2, max_steps=10, warmup_steps=4)
    lrs = []
    for epoch in range(10):
        sched.step(epoch)
        lrs.append([g["lr"] for g in opt.param_groups])
    assert [round(l[1], 6) for l in lrs[:4]] == [0.002, 0.004, 0.006, 0.008]
    assert lrs[4][1] == pytest.approx(1e-2)
    assert all(a[0] == pytest.approx(0.1 * a[1]) for a in lrs)
    assert lrs[-1][1] < lrs[5][1]


def test_pretrained_weights_argument_is_read_from_the_command_line():
    assert pretrained_weights_argument(["nnUNetv2_train", "1", "3d_fullres", "0", "-pretrained_weights", "x.pth"]) == "x.pth"
    assert pretrained_weights_argument(["nnUNetv2_train", "1", "3d_fullres", "0"]) is None


def test_encoder_only_checkpoint_counts_encoder_aliases_as_loaded():
    """nnU-Net's U-Net also exposes the encoder as decoder.encoder.*: loading encoder.* loads those too."""
    source = {k: v for k, v in _unet().state_dict().items() if k.startswith("encoder.")}
    target = _unet()
    report = transfer_weights(target, source)
    assert not any(k.startswith("decoder.encoder.") for k in report.missing)
    assert any(k.startswith("decoder.encoder.") for k in report.loaded)
    assert report.missing and all(k.startswith("decoder.") for k in report.missing)
