"""KiTS21 HEC loss: hand-computed values, equality with nnU-Net's Dice+CE, stability, deep supervision, ignore label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_transfer.losses.hec import KITS21_HEC_WEIGHTS, HECDiceCELoss, hec_bce, hec_loss_for_trainer

DICE_KW = {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}  # nnUNetTrainer._build_loss


def _numpy_hec_bce(logits: np.ndarray, target: np.ndarray, labels, keep=None) -> float:
    """Plain numpy: softmax over channels, HEC probability = sum over its labels, mean binary cross entropy."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    p = prob[:, list(labels)].sum(axis=1)
    y = np.isin(target[:, 0], labels).astype(np.float64)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if keep is None:
        return float(bce.mean())
    return float(bce[keep].sum() / max(keep.sum(), 1))


def _random_case(shape=(2, 4, 3, 4, 4), seed=0, max_label=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, max_label + 1, (shape[0], 1, *shape[2:]), generator=g).double()
    return logits, target


def test_matches_hand_computation_on_tiny_tensor():
    logits = np.array([[[[2.0, -1.0], [0.5, 0.0]],      # background
                        [[0.0, 1.0], [0.3, -2.0]],      # kidney
                        [[-1.0, 0.5], [1.5, 0.0]],      # tumor
                        [[0.5, -0.5], [-1.0, 3.0]]]])   # cyst      -> shape (1, 4, 2, 2)
    target = np.array([[[[0, 1], [2, 3]]]], dtype=np.float64)
    lt, tt = torch.tensor(logits), torch.tensor(target)
    kam = _numpy_hec_bce(logits, target, (1, 2, 3))
    mass = _numpy_hec_bce(logits, target, (2, 3))
    assert hec_bce(lt, tt, (1, 2, 3)).item() == pytest.approx(kam, rel=1e-6)
    assert hec_bce(lt, tt, (2, 3)).item() == pytest.approx(mass, rel=1e-6)
    # the second voxel: target kidney, p(K+M) = 1 - softmax_0 ; written out by hand
    s = np.exp(logits[0, :, 0, 1])
    assert -np.log(1 - s[0] / s.sum()) == pytest.approx(
        _numpy_hec_bce(logits[:, :, :1, 1:], target[:, :, :1, 1:], (1, 2, 3)), rel=1e-12)

    loss = HECDiceCELoss(DICE_KW, {})
    base = DC_and_CE_loss(dict(DICE_KW), {}, dice_class=MemoryEfficientSoftDiceLoss)
    expected = base(lt, tt).item() + 0.1 * kam + 0.3 * mass
    assert loss(lt, tt).item() == pytest.approx(expected, rel=1e-6)
    parts = loss.hec_losses(lt, tt)
    assert parts["kidney_and_mass"].item() == pytest.approx(kam, rel=1e-6)
    assert parts["mass"].item() == pytest.approx(mass, rel=1e-6)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_zero_weights_equal_nnunet_dice_ce_exactly(batch_dice):
    logits, target = _random_case(seed=1)
    kw = dict(DICE_KW, batch_dice=batch_dice)
    zero = {"kidney_and_mass": ((1, 2, 3), 0.0), "mass": ((2, 3), 0.0)}
    ours = HECDiceCELoss(kw, {}, hec_weights=zero)
    ref = DC_and_CE_loss(dict(kw), {}, weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    assert torch.equal(ours(logits, target), ref(logits, target))
    assert isinstance(ours, DC_and_CE_loss) and isinstance(ours.dc, MemoryEfficientSoftDiceLoss)
    assert kw == dict(DICE_KW, batch_dice=batch_dice)  # the caller's dicts are not modified


def test_custom_weights_scale_each_term():
    logits, target = _random_case(seed=2)
    only_mass = HECDiceCELoss(DICE_KW, {}, hec_weights={"mass": ((2, 3), 2.0)})
    base = DC_and_CE_loss(dict(DICE_KW), {}, dice_class=MemoryEfficientSoftDiceLoss)
    expected = base(logits, target) + 2.0 * hec_bce(logits, target, (3, 2))
    assert only_mass(logits, target).item() == pytest.approx(expected.item(), rel=1e-9)
    assert dict(KITS21_HEC_WEIGHTS) == {"kidney_and_mass": ((1, 2, 3), 0.1), "mass": ((2, 3), 0.3)}


def test_extreme_logits_give_exact_finite_loss_and_gradients():
    # every voxel: network certain of background (+50 vs -50) while the target is tumor
    logits = torch.full((1, 4, 2, 2, 2), -50.0)
    logits[:, 0] = 50.0
    logits.requires_grad_(True)
    target = torch.full((1, 1, 2, 2, 2), 2.0)
    value = hec_bce(logits, target, (2, 3))
    # log p = logsumexp(-50, -50) - logsumexp(50, -50, -50, -50) = -100 + log 2 (float64 reference)
    assert value.item() == pytest.approx(100 - np.log(2), rel=1e-6)
    loss = HECDiceCELoss(DICE_KW, {})(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # float16 logits (as an fp16 network would give them) are handled in float32
    assert hec_bce(logits.detach().half(), target, (2, 3)).item() == pytest.approx(value.item(), rel=1e-6)


def test_finite_under_bfloat16_autocast_with_saturated_network():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([50.0, -50.0, -50.0, 50.0]).view(4, 1, 1, 1, 1))
        conv.bias.zero_()
    x = torch.sign(torch.randn(2, 1, 4, 4, 4))  # logits exactly +-50
    target = torch.randint(0, 4, (2, 1, 4, 4, 4)).float()
    loss_fn = HECDiceCELoss(DICE_KW, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        assert out.dtype == torch.bfloat16
        loss = loss_fn(out, target)
        hec = hec_bce(out, target, (1, 2, 3))
    assert hec.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(conv.weight.grad).all() and torch.isfinite(conv.bias.grad).all()
    # float64 reference written with log-sum-exp (1 - p underflows to 0 in float64 at these logits)
    z = out.detach().double().numpy()
    lse = logsumexp(z, axis=1)
    log_p, log_not_p = logsumexp(z[:, 1:], axis=1) - lse, z[:, 0] - lse
    ref = -np.where(np.isin(target.numpy()[:, 0], (1, 2, 3)), log_p, log_not_p).mean()
    assert hec.item() == pytest.approx(ref, rel=1e-5) and ref > 10


def test_inside_nnunet_deep_supervision_wrapper():
    logits0, target0 = _random_case((2, 4, 4, 8, 8), seed=3)
    logits1 = torch.randn(2, 4, 2, 4, 4, dtype=torch.float64)
    target1 = target0[:, :, ::2, ::2, ::2]
    logits0.requires_grad_(True)
    logits1.requires_grad_(True)
    inner = HECDiceCELoss(DICE_KW, {})
    wrapped = DeepSupervisionWrapper(inner, [0.6, 0.4])
    total = wrapped([logits0, logits1], [target0, target1])
    expected = 0.6 * inner(logits0, target0) + 0.4 * inner(logits1, target1)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    total.backward()
    assert logits0.grad.abs().sum() > 0 and logits1.grad.abs().sum() > 0


def test_ignore_label_masks_the_hec_terms():
    ignore = 4
    logits, target = _random_case((2, 4, 3, 4, 4), seed=4, max_label=4)  # labels 0..3 plus the ignore label 4
    keep = (target[:, 0] != ignore).numpy()
    assert 0 < keep.sum() < keep.size
    logits.requires_grad_(True)
    value = hec_bce(logits, target, (2, 3), ignore_label=ignore)
    assert value.item() == pytest.approx(_numpy_hec_bce(logits.detach().numpy(), target.numpy(), (2, 3), keep),
                                         rel=1e-9)
    value.backward()
    ignored = torch.from_numpy(~keep).unsqueeze(1).expand_as(logits)
    assert logits.grad[ignored].abs().max() == 0 and logits.grad[~ignored].abs().sum() > 0

    all_ignored = torch.full_like(target, ignore)
    zero = hec_bce(logits, all_ignored, (2, 3), ignore_label=ignore)
    assert zero.item() == 0.0 and zero.requires_grad

    ours = HECDiceCELoss(DICE_KW, {}, ignore_label=ignore)
    ref = DC_and_CE_loss(dict(DICE_KW), {}, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss)
    expected = ref(logits, target) + 0.1 * hec_bce(logits, target, (1, 2, 3), ignore) + 0.3 * value
    assert ours(logits, target).item() == pytest.approx(expected.item(), rel=1e-9)


def test_invalid_definitions_are_rejected_with_clear_messages():
    logits, target = _random_case(seed=5)
    with pytest.raises(ValueError, match=r"labels \[5\] do not exist"):
        hec_bce(logits, target, (2, 5))
    with pytest.raises(ValueError, match="contains every label"):
        hec_bce(logits, target, (0, 1, 2, 3))
    with pytest.raises(ValueError, match="integer label map"):
        hec_bce(logits, torch.zeros_like(logits), (2, 3))
    with pytest.raises(ValueError, match="weight must be"):
        HECDiceCELoss(DICE_KW, {}, hec_weights={"mass": ((2, 3), -1.0)})
    with pytest.raises(ValueError, match="ignore label 3"):
        HECDiceCELoss(DICE_KW, {}, ignore_label=3)


def test_hec_loss_for_a_real_nnunet_trainer(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from test_export import CONFIG, DATASET_JSON, tiny_plans  # the tiny plans of the export tests

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = dict(tiny_plans(), continue_training=False)
    trainer = nnUNetTrainer(plans, CONFIG, 0, DATASET_JSON, device=torch.device("cpu"))
    nnunet_loss = trainer._build_loss()  # nnU-Net's own construction: deep supervision around DC_and_CE_loss
    assert isinstance(nnunet_loss, DeepSupervisionWrapper)
    hec = hec_loss_for_trainer(trainer, {"kidney_and_mass": ((1, 2, 3), 0.0), "mass": ((2, 3), 0.0)})
    logits, target = _random_case((2, 4, 4, 8, 8), seed=6)
    assert torch.equal(hec(logits, target), nnunet_loss.loss(logits, target))
    nnunet_loss.loss = hec_loss_for_trainer(trainer)  # the pattern documented for trainers' _build_loss
    assert nnunet_loss.weight_factors == (1.0, 0.0)  # 3-stage net: nnU-Net drops the lowest scale
    total = nnunet_loss([logits, logits[:, :, ::2, ::2, ::2]], [target, target[:, :, ::2, ::2, ::2]])
    assert total.item() == pytest.approx(nnunet_loss.loss(logits, target).item(), rel=1e-12)
    assert total.item() > hec(logits, target).item()  # the HEC terms add a positive amount
    with pytest.raises(ValueError, match=r"labels \[5\] that dataset.json does not define"):
        hec_loss_for_trainer(trainer, {"bad": ((2, 5), 0.1)})
