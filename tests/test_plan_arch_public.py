"""plan-arch with the public models' networks on a tiny planned dataset: plans for each registry name, the network
nnU-Net's trainer builds from them (forward pass, loss), and released weights recorded and loaded by the trainer.

The planned dataset is test_plan_arch's (nnU-Net's ExperimentPlanner on a tiny synthetic KiTS21, nothing
preprocessed); the trainers are built in-process as nnU-Net builds them, without data.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_transfer.architectures.networks import NETWORKS
from nnunet_transfer.planning.plan_arch import plan_arch
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.transfer.record import read_record
from support import public_releases as rel
from test_plan_arch import DATASET, DATASET_ID, planned  # noqa: F401  (the module-scoped planned dataset)

pytestmark = pytest.mark.filterwarnings("ignore:.*holds no preprocessed data yet")
needs_monai = pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="MONAI is not installed")
#: STU-Net L and H have 440M and 1457M parameters: their plans are checked, the networks built on the meta device
LARGE = {"stunet-l", "stunet-h"}


def _trainer(planned_root: Path, plans_name: str) -> FineTuneTrainer:
    plans = json.loads((planned_root / "nnUNet_preprocessed" / DATASET / f"{plans_name}.json").read_text())
    dataset_json = json.loads((planned_root / "nnUNet_raw" / DATASET / "dataset.json").read_text())
    return FineTuneTrainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                           device=torch.device("cpu"))


def _build(trainer: FineTuneTrainer) -> torch.nn.Module:
    return trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                              trainer.label_manager.num_segmentation_heads,
                                              trainer.enable_deep_supervision)


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_monai) if NETWORKS[n].extra else n for n in NETWORKS])
def test_plan_arch_builds_the_network_from_nnunets_plans(planned, name, capsys):  # noqa: F811
    spec = NETWORKS[name]
    plans_file = plan_arch(DATASET_ID, name, preprocess=False)
    out = capsys.readouterr().out
    assert plans_file.name == f"nnUNetPlans_{name}.json"
    assert spec.constraint in out and "patch size" in out  # the constraints are stated
    source = json.loads(plans_file.with_name("nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    cfg = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    for key in ("data_identifier", "spacing", "normalization_schemes", "batch_size"):
        assert cfg[key] == source[key], key  # nnU-Net's preprocessed data is reused
    strides = cfg["architecture"]["arch_kwargs"]["strides"]
    patch = cfg["patch_size"]
    assert all(p % math.prod(s[a] for s in strides) == 0 and p >= spec.min_patch for a, p in enumerate(patch))
    trainer = _trainer(planned, plans_file.stem)
    assert trainer.enable_deep_supervision == spec.deep_supervision
    if name in LARGE:
        with torch.device("meta"):
            network = _build(trainer)
        assert network.conv_blocks_context[0][0].conv1.out_channels == spec.fixed_kwargs["dims"][0]
        return
    if name == "primus-m":  # 16 transformer blocks of width 864: built on the meta device, its token grid checked
        assert cfg["architecture"]["arch_kwargs"]["input_shape"] == patch
        with torch.device("meta"):
            network = _build(trainer)
        assert list(network.token_grid) == [p // 8 for p in patch]
        return
    network = _build(trainer)
    assert network.decoder.deep_supervision == spec.deep_supervision
    labels = trainer.label_manager.num_segmentation_heads
    if name == "swinunetr":
        return  # built; the forward pass of Swin UNETR (64^3 at least, ~15 s on CPU) is checked once, with v2
    # a forward pass of a patch nnU-Net samples, and nnU-Net's loss on the output
    size = patch
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        output = network(x)
    loss = trainer._build_loss()
    if spec.deep_supervision:
        assert isinstance(loss, DeepSupervisionWrapper)
        scales = trainer._get_deep_supervision_scales()
        assert [list(o.shape[2:]) for o in output] == [[round(n * f) for n, f in zip(size, s)] for s in scales]
        assert output[0].shape[1] == labels
    else:
        assert not isinstance(loss, DeepSupervisionWrapper)
        assert tuple(output.shape) == (1, labels, *size)
        assert torch.isfinite(loss(output, torch.zeros(1, 1, *size))).all()


def test_plan_arch_records_released_weights_and_the_trainer_loads_them(planned, tmp_path, capsys):  # noqa: F811
    # Models Genesis: {"state_dict": {"module.*"}}; SuPreM's U-Net: {"net": {"module.backbone.*", head}}
    for arch, release in (("genesis-unet3d", rel.genesis_release()), ("suprem-unet", rel.suprem_release("unet"))):
        weights = rel.save(release, tmp_path / f"{arch}.pth")
        plans_file = plan_arch(DATASET_ID, arch, weights=str(weights), preprocess=False)
        assert "100.0%" in capsys.readouterr().out
        record = read_record(json.loads(plans_file.read_text())["configurations"]["3d_fullres"])
        assert Path(record.checkpoint) == weights.resolve() and record.min_fraction > 0.8
        trainer = _trainer(planned, plans_file.stem)
        trainer.network = _build(trainer)
        report = trainer._load_pretrained()
        assert not report.missing and report.reinitialised == ["out_tr.final_conv.weight", "out_tr.final_conv.bias"]
        assert report.n_loaded == 104  # every UNet3D tensor but the output layer


def test_plan_arch_refuses_a_file_of_another_family(planned, tmp_path):  # noqa: F811
    weights = rel.save(rel.dodnet_release(), tmp_path / "dodnet.pth")
    with pytest.raises(ValueError, match="plan with --arch dodnet-unet3d"):
        plan_arch(DATASET_ID, "genesis-unet3d", weights=str(weights), preprocess=False, plans_name="wrong")
    assert not (planned / "nnUNet_preprocessed" / DATASET / "wrong.json").exists()
