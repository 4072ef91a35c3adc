"""plan_arch on a tiny planned KiTS21 dataset, and the Med3D/MLEAM trainers built from the plans it writes.

The dataset is made once per module: synth_kits21 -> convert_kits -> fingerprint -> nnU-Net's planner (in-process,
``plan_experiment_dataset``). nnU-Net's fingerprint extractor always starts a spawn process pool (~10 s on a busy
2-core machine), so the fingerprint is computed here from the converted images (the planner reads spacings, shapes
and foreground intensities from it); the end-to-end test runs nnU-Net's own extraction. nnU-Net 2.8.1 reads its
path variables at every use, so setting them for the module is enough.

Trainers are constructed in-process (no preprocessed data needed): network from the plans through the trainer's
``build_network_architecture``, then the parts under test (transfer record, freezing, loss, optimiser, scheduler).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.architectures.med3d_unet import MED3D_UNET_CLASS_NAME, deep_supervision_sizes
from nnunet_transfer.planning.plan_arch import MLEAM_CLASS_NAME, plan_arch
from nnunet_transfer.trainers.med3d import Med3DFinetuneTrainer
from nnunet_transfer.transfer.record import read_record
from nnunet_transfer.transfer.weights import transfer_weights

pytestmark = pytest.mark.filterwarnings("ignore:.*holds no preprocessed data yet")  # asserted once, below

DATASET_ID, DATASET = 611, "Dataset611_KiTS21"
SHAPE = (16, 48, 48)


def _write_fingerprint(raw_dataset: Path, out: Path) -> None:
    """The fingerprint fields nnU-Net's planner reads, computed from the raw images and labels."""
    shapes, spacings, foreground = [], [], []
    for image_file in sorted((raw_dataset / "imagesTr").glob("*_0000.nii.gz")):
        image = sitk.ReadImage(str(image_file))
        label_file = raw_dataset / "labelsTr" / (image_file.name[:-len("_0000.nii.gz")] + ".nii.gz")
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        array = sitk.GetArrayFromImage(image)
        shapes.append(list(array.shape))
        spacings.append(list(image.GetSpacing())[::-1])
        foreground.append(array[label > 0])
    values = np.concatenate(foreground).astype(float)
    stats = {"max": values.max(), "mean": values.mean(), "median": float(np.median(values)), "min": values.min(),
             "percentile_00_5": np.percentile(values, 0.5), "percentile_99_5": np.percentile(values, 99.5),
             "std": values.std()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_fingerprint.json").write_text(json.dumps({
        "foreground_intensity_properties_per_channel": {"0": {k: float(v) for k, v in stats.items()}},
        "median_relative_size_after_cropping": 1.0, "shapes_after_crop": shapes, "spacings": spacings}))


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """nnU-Net folders with Dataset611 planned by nnU-Net's ExperimentPlanner (nnUNetPlans), nothing preprocessed."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset

    from nnunet_transfer.data.convert_kits import convert_kits
    from nnunet_transfer.data.synthetic import synth_kits21

    root = tmp_path_factory.mktemp("plan_arch")
    mp = pytest.MonkeyPatch()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        mp.setenv(name, str(root / name))
    synth_kits21(root / "src", cases=4, seed=2, shape=SHAPE)
    raw_dataset = convert_kits(root / "src", DATASET_ID)
    _write_fingerprint(raw_dataset, root / "nnUNet_preprocessed" / DATASET)
    plan_experiment_dataset(DATASET_ID, ExperimentPlanner)
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def medicalnet_file(planned) -> Path:
    """A MedicalNet-format ResNet-10 file: {'state_dict': {'module.<key>': tensor}} plus a conv_seg head."""
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in Med3DResNet(depth=10).state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(2, 512, 1, 1, 1)
    path = planned / "resnet_10.pth"
    torch.save({"state_dict": state}, path)
    return path


def _plans(planned: Path, name: str) -> dict:
    return json.loads((planned / "nnUNet_preprocessed" / DATASET / f"{name}.json").read_text())


def _trainer(cls, planned: Path, plans_name: str):
    dataset_json = json.loads((planned / "nnUNet_raw" / DATASET / "dataset.json").read_text())
    trainer = cls(dict(_plans(planned, plans_name), continue_training=False), "3d_fullres", 0, dataset_json,
                  device=torch.device("cpu"))
    trainer.network = trainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, trainer.label_manager.num_segmentation_heads, True)
    return trainer


def _ds_targets(trainer, batch: int = 2, seed: int = 0):
    """Patch-size input and nnU-Net-style deep-supervision targets (label map downsampled by nearest)."""
    gen = torch.Generator().manual_seed(seed)
    patch = list(trainer.configuration_manager.patch_size)
    x = torch.randn(batch, 1, *patch, generator=gen)
    seg = torch.zeros(batch, 1, *patch)
    seg[:, :, 4:12, 10:30, 12:36] = 1
    seg[:, :, 6:10, 14:22, 16:24] = 2
    scales = trainer._get_deep_supervision_scales()
    targets = [torch.nn.functional.interpolate(seg, size=[round(n * s) for n, s in zip(patch, scale)],
                                               mode="nearest-exact") for scale in scales]
    return x, targets


def test_med3d_plans_keep_the_data_and_record_medicalnet_weights(planned, medicalnet_file):
    plans_file = plan_arch(DATASET_ID, "med3d-resnet10", weights=str(medicalnet_file), preprocess=False)
    assert plans_file.name == "nnUNetPlans_med3d-resnet10.json"
    source, plans = _plans(planned, "nnUNetPlans"), json.loads(plans_file.read_text())
    assert plans["plans_name"] == "nnUNetPlans_med3d-resnet10" and list(plans["configurations"]) == ["3d_fullres"]
    cfg, src = plans["configurations"]["3d_fullres"], source["configurations"]["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == MED3D_UNET_CLASS_NAME
    for key in ("data_identifier", "spacing", "normalization_schemes", "batch_size"):
        assert cfg[key] == src[key], key  # nnU-Net's preprocessed data is reused as it is
    strides = cfg["architecture"]["arch_kwargs"]["strides"]
    total = np.prod(np.array(strides), axis=0)
    assert all(p % t == 0 for p, t in zip(cfg["patch_size"], total))
    assert strides[1][0] == 1 and strides[1][1:] == [2, 2]  # 3.4 mm slices are not halved first (as nnU-Net)

    record = read_record(cfg)
    assert record.prefix_map == {"": "encoder."} and Path(record.checkpoint) == medicalnet_file.resolve()
    # what the trainer does with the record: 0 encoder keys missing, the MedicalNet values land in the encoder
    trainer = _trainer(Med3DFinetuneTrainer, planned, plans_file.stem)
    report = trainer._load_pretrained()
    assert report is not None and report.n_loaded == 72 and report.fraction_loaded >= record.min_fraction > 0
    assert not [k for k in report.missing if k.startswith("encoder.")]
    assert any("conv_seg" in k for k in report.skipped)
    saved = torch.load(medicalnet_file, weights_only=True)["state_dict"]
    net_state = trainer.network.state_dict()
    assert torch.equal(net_state["encoder.layer4.0.conv2.weight"], saved["module.layer4.0.conv2.weight"])
    # nnU-Net's deep-supervision targets have the network's output sizes (no cropping needed)
    x, targets = _ds_targets(trainer, batch=1)
    with torch.no_grad():
        outputs = trainer.network(x)
    assert [list(o.shape[2:]) for o in outputs] == [list(t.shape[2:]) for t in targets] == \
        deep_supervision_sizes(cfg["patch_size"], strides)


def test_frozen_med3d_encoder_keeps_batchnorm_statistics(planned, medicalnet_file):
    from nnunet_transfer.trainers.med3d import Med3DFinetuneTrainer_frozenEncoder

    plans_file = plan_arch(DATASET_ID, "med3d-resnet10", weights=str(medicalnet_file), preprocess=False)
    trainer = _trainer(Med3DFinetuneTrainer_frozenEncoder, planned, plans_file.stem)
    trainer.transfer_report = trainer._load_pretrained()
    net = trainer.network
    before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("encoder.")}
    net.train()  # what nnU-Net's on_train_epoch_start does, then FineTuneTrainer's stage
    trainer._set_trainable_stage(0)
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.startswith("encoder."))
    assert all(not m.training for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm3d))
    x, targets = _ds_targets(trainer, batch=2)
    loss = trainer._build_loss()(net(x), targets)
    loss.backward()
    for k, v in net.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(v, before[k]), f"{k} changed although the encoder is frozen"
    assert net.decoder.seg_layers[-1].weight.grad is not None


def test_medicalnet_recipe_puts_pretrained_tensors_at_a_tenth(planned, medicalnet_file):
    from nnunet_transfer.trainers.med3d import Med3DFinetuneTrainer_MedicalNet

    plans_file = plan_arch(DATASET_ID, "med3d-resnet10", weights=str(medicalnet_file), preprocess=False)
    trainer = _trainer(Med3DFinetuneTrainer_MedicalNet, planned, plans_file.stem)
    trainer.transfer_report = trainer._load_pretrained()
    optimizer, scheduler = trainer.configure_optimizers()
    scheduler.step(0)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(trainer.network.named_parameters())
    assert lrs[id(params["encoder.conv1.weight"])] == pytest.approx(1e-3)
    assert lrs[id(params["decoder.seg_layers.0.weight"])] == pytest.approx(1e-2)


def test_medicalnet_sgd_is_medicalnets_train_py(planned, medicalnet_file):
    from nnunet_transfer.trainers.med3d import Med3DFinetuneTrainer_MedicalNetSGD

    plans_file = plan_arch(DATASET_ID, "med3d-resnet10", weights=str(medicalnet_file), preprocess=False)
    trainer = _trainer(Med3DFinetuneTrainer_MedicalNetSGD, planned, plans_file.stem)
    trainer.transfer_report = trainer._load_pretrained()
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and not optimizer.defaults["nesterov"]
    assert optimizer.defaults["weight_decay"] == 1e-3
    params = dict(trainer.network.named_parameters())
    for epoch in (0, 10):
        scheduler.step(epoch)  # nnU-Net steps the scheduler at the start of every epoch, as train.py does
        lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        assert lrs[id(params["encoder.conv1.weight"])] == pytest.approx(1e-3 * 0.99 ** (epoch + 1))
        assert lrs[id(params["decoder.seg_layers.0.weight"])] == pytest.approx(1e-1 * 0.99 ** (epoch + 1))


@pytest.mark.parametrize("arch", ["plain", "med3d-resnet10"])
def test_mleam_trainer_loss_is_nnunet_loss_plus_weighted_edge_terms(planned, arch):
    from nnunet_transfer.losses.mleam_edge import MLEAMLoss
    from nnunet_transfer.trainers.mleam import MLEAMTrainer_paper

    plans_file = plan_arch(DATASET_ID, arch, decoder="mleam", preprocess=False)
    assert plans_file.stem == ("nnUNetPlans_mleam" if arch == "plain" else "nnUNetPlans_med3d-resnet10_mleam")
    cfg = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == MLEAM_CLASS_NAME
    trainer = _trainer(MLEAMTrainer_paper, planned, plans_file.stem)
    scales = trainer._get_deep_supervision_scales()
    if arch == "plain":  # nnU-Net's own scales from the plans' strides are right for the plain encoder
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        assert scales == [list(s) for s in nnUNetTrainer._get_deep_supervision_scales(trainer)]
    else:  # Med3D encoder: full, 1/2, 1/4 and two 1/8 levels, more than its three strides tell nnU-Net
        assert len(scales) == 5 and scales[0] == [1.0, 1.0, 1.0]

    loss = trainer._build_loss()
    assert isinstance(loss, MLEAMLoss)
    x, targets = _ds_targets(trainer, batch=1)
    output = trainer.network(x)
    total = loss(output, targets)
    edges = trainer.network.last_edge_logits
    assert len(output) == len(scales) and len(edges) == 3
    from nnunet_transfer.losses.mleam_edge import mleam_edge_loss
    expected = loss.seg_loss(output, targets) + mleam_edge_loss(edges, targets, weights=(0.5, 0.8, 1.0))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    history = loss.pop_history()
    assert history.shape == (1, 3) and (history > 0).all() and loss.edge_history == []
    total.backward()
    assert trainer.network.decoder.edge_attention[0].head[1].weight.grad.abs().sum() > 0

    # deep supervision off (prediction): the forward returns the segmentation tensor, the loss still works
    trainer.network.decoder.deep_supervision = False
    with torch.no_grad():
        seg = trainer.network(x)
    assert isinstance(seg, torch.Tensor) and list(seg.shape[2:]) == list(x.shape[2:])
    assert torch.isfinite(MLEAMLoss(loss.seg_loss.loss, trainer._edge_logits)(seg, targets[0]))


def test_mleam_paper_schedule_is_adam_with_step_decay_in_iterations(planned):
    from nnunet_transfer.trainers.lr_schedulers import StepDecayLRScheduler
    from nnunet_transfer.trainers.mleam import MLEAMTrainer, MLEAMTrainer_paper

    plans_file = plan_arch(DATASET_ID, "plain", decoder="mleam", preprocess=False)
    trainer = _trainer(MLEAMTrainer_paper, planned, plans_file.stem)
    trainer.num_iterations_per_epoch = 300  # 2000 iterations = 6.67 epochs
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.9, 0.999)
    assert isinstance(scheduler, StepDecayLRScheduler)
    lrs = []
    for epoch in (0, 6, 7, 13, 14):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    default = _trainer(MLEAMTrainer, planned, plans_file.stem)
    optimizer, _ = default.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and default.initial_lr == 1e-2


def test_plan_arch_errors_are_clear_and_write_nothing(planned, medicalnet_file, tmp_path):
    folder = planned / "nnUNet_preprocessed" / DATASET
    with pytest.raises(FileNotFoundError, match="nnUNetv2_plan_and_preprocess -d 611"):
        plan_arch(DATASET_ID, "med3d-resnet10", source_plans="nnUNetResEncUNetMPlans", preprocess=False)
    with pytest.raises(ValueError, match="unknown encoder 'med3d-resnet11' \\(did you mean"):
        plan_arch(DATASET_ID, "med3d-resnet11", preprocess=False)
    with pytest.raises(ValueError, match="unknown decoder"):
        plan_arch(DATASET_ID, "med3d-resnet10", decoder="unet++", preprocess=False)
    with pytest.raises(ValueError, match="PlainConvUNet: train with the source plans"):
        plan_arch(DATASET_ID, "plain", preprocess=False)
    with pytest.raises(ValueError, match="3D network"):
        plan_arch(DATASET_ID, "med3d-resnet10", configuration="2d", preprocess=False)
    with pytest.raises(KeyError, match="no configuration '3d_lowres'"):
        plan_arch(DATASET_ID, "med3d-resnet10", configuration="3d_lowres", preprocess=False)
    # a ResNet-10 file for a ResNet-18 network: the registry check names both architectures
    with pytest.raises(ValueError, match="ResNet-10.*ResNet-18|ResNet-18.*ResNet-10"):
        plan_arch(DATASET_ID, "med3d-resnet18", weights=str(medicalnet_file), plans_name="wrong_depth",
                  preprocess=False)
    # renamed file, not in the registry: checked against the record of its depth (no checksum needed)
    renamed = tmp_path / "my_medicalnet_r10.pth"
    renamed.write_bytes(medicalnet_file.read_bytes())
    with pytest.warns(UserWarning, match="nnUNetv2_preprocess -d 611 -plans_name renamed"):
        assert plan_arch(DATASET_ID, "med3d-resnet10", weights=str(renamed), plans_name="renamed",
                         preprocess=False).is_file()
    with pytest.raises(ValueError, match="looks like ResNet-10.*record says ResNet-18"):
        plan_arch(DATASET_ID, "med3d-resnet18", weights=str(renamed), plans_name="wrong_depth", preprocess=False)
    # MedicalNet weights for the plain encoder: nothing of the encoder loads
    with pytest.raises(ValueError, match="does not cover the network's encoder"):
        plan_arch(DATASET_ID, "plain", decoder="mleam", weights=str(medicalnet_file), plans_name="plain_wrong",
                  preprocess=False)
    assert not (folder / "wrong_depth.json").exists() and not (folder / "plain_wrong.json").exists()


def test_transfer_of_a_plain_nnunet_checkpoint_into_the_mleam_encoder(planned, tmp_path):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(_plans(planned, "nnUNetPlans")).get_configuration("3d_fullres")
    unet = get_network_from_plans(cfg.network_arch_class_name, cfg.network_arch_init_kwargs,
                                  cfg.network_arch_init_kwargs_req_import, 1, 4, deep_supervision=True)
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": unet.state_dict()}, checkpoint)
    plans_file = plan_arch(DATASET_ID, "plain", decoder="mleam", weights=str(checkpoint),
                           plans_name="nnUNetPlans_mleam_pretrained", preprocess=False)
    record = read_record(json.loads(plans_file.read_text())["configurations"]["3d_fullres"])
    from nnunet_transfer.trainers.mleam import MLEAMTrainer

    trainer = _trainer(MLEAMTrainer, planned, plans_file.stem)
    report = transfer_weights(trainer.network, record.checkpoint, prefix_map=record.prefix_map,
                              exclude=record.exclude)
    encoder_keys = [k for k in trainer.network.state_dict() if k.startswith("encoder.")]
    assert sorted(k for k in report.loaded if k.startswith("encoder.")) == sorted(encoder_keys)
    assert not [k for k in report.loaded if k.startswith("decoder.")]
