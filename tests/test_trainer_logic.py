"""Trainer logic that must hold at every epoch: fine-tuning stages and task-balanced sampling."""

from collections import Counter

import pytest

from nnunet_transfer.trainers.finetune import NEW_PARAMETERS, frozen_parameter_names
from nnunet_transfer.trainers.mots_pretrain import balanced_sampling_list

NAMES = ["encoder.stages.0.w", "encoder.stages.1.w", "decoder.stages.0.w", "decoder.seg_layers.0.w",
         "decoder.attention_gates.0.w"]
PRETRAINED = {"encoder.stages.0.w", "encoder.stages.1.w", "decoder.stages.0.w"}


def test_nothing_frozen_by_default():
    assert frozen_parameter_names(NAMES, PRETRAINED, 0) == set()


def test_frozen_encoder_every_epoch():
    for epoch in (0, 5, 500):
        assert frozen_parameter_names(NAMES, PRETRAINED, epoch, freeze_encoder=True) == {
            "encoder.stages.0.w", "encoder.stages.1.w"}


def test_head_warmup_trains_only_new_layers_then_everything():
    assert frozen_parameter_names(NAMES, PRETRAINED, 2, head_warmup_epochs=3) == PRETRAINED
    assert frozen_parameter_names(NAMES, PRETRAINED, 3, head_warmup_epochs=3) == set()


@pytest.mark.parametrize("epoch,frozen", [
    (0, {"encoder.stages.0.w", "encoder.stages.1.w", "decoder.stages.0.w"}),
    (4, {"encoder.stages.0.w", "encoder.stages.1.w"}),
    (10, set()),
])
def test_staged_unfreezing_is_a_function_of_the_epoch(epoch, frozen):
    schedule = ((0, [NEW_PARAMETERS]), (4, ["decoder."]), (10, [""]))
    assert frozen_parameter_names(NAMES, PRETRAINED, epoch, unfreeze_schedule=schedule) == frozen


def test_balanced_sampling_follows_inverse_sqrt_of_task_size():
    case_to_task = {f"a{i}": 0 for i in range(100)} | {f"b{i}": 1 for i in range(25)}
    ids = list(case_to_task)
    repeated = balanced_sampling_list(ids, case_to_task, resolution=8)
    per_case = Counter(repeated)
    assert per_case["a0"] == 8 and per_case["b0"] == 16  # sqrt(100/25) = 2
    share = Counter(case_to_task[i] for i in repeated)
    assert share[0] / share[1] == pytest.approx((100 / 25) ** 0.5)  # task share ~ sqrt(n_task)


def test_negative_log_soft_dice_wraps_nnunets_dice_term():
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunet_transfer.losses.log_dice import NegativeLogSoftDice
    from nnunet_transfer.trainers.frozen_encoder import FrozenEncoderTrainer, FrozenEncoderTrainer_logDice

    torch.manual_seed(0)
    dice_only = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=0,
                               weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    logits = torch.randn(2, 3, 4, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 4, 6, 6))
    negative_dice = dice_only(logits, target)
    loss = NegativeLogSoftDice(dice_only)(logits, target)
    torch.testing.assert_close(loss, -torch.log(-negative_dice))
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert not FrozenEncoderTrainer.log_dice and FrozenEncoderTrainer_logDice.log_dice


def test_region_dice_plot_is_its_own_small_file_and_leaves_nnunets_progress_png_alone(tmp_path):
    from PIL import Image

    from nnunet_transfer.trainers.progress import REGION_PROGRESS_FILE, plot_region_dice

    nnunet_png = tmp_path / "progress.png"
    nnunet_png.write_bytes(b"nnU-Net's figure")
    assert plot_region_dice(str(tmp_path), [], ["liver"]) is None  # nothing logged yet: nothing drawn
    history = [[0.1, None, 0.0], [0.5, 0.2, float("nan")], [0.8, 0.4, 0.1]]
    path = plot_region_dice(str(tmp_path), history, ["liver", "liver_tumor"])  # third region: unnamed
    assert path == str(tmp_path / REGION_PROGRESS_FILE)
    assert Image.open(path).size == (1000, 500)
    assert nnunet_png.read_bytes() == b"nnU-Net's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.png", REGION_PROGRESS_FILE]  # no temp left
