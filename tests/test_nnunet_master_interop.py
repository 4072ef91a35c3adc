"""nnU-Net master interop: its ``pretrain_info`` plans block read and written exactly, applied by our trainers and
understood by transfer-check; ``load_checkpoint`` under both argument names; the positional embedding of a
transformer resized over its token grid; intensity normalisation matched to the pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.cli.main import main
from nnunet_transfer.discovery import ext_trainer_value
from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.trainers.checkpoint_argument import CHECKPOINT_ARGUMENT_NAMES
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.guarded import GuardedTrainer
from nnunet_transfer.transfer.adapt import resize_positional_embedding
from nnunet_transfer.transfer.check import transfer_check
from nnunet_transfer.transfer.normalisation import (ExpectedNormalisation, normalisation_mismatch,
                                                    write_matching_plans)
from nnunet_transfer.transfer.pretrain_info import (PRETRAIN_INFO_KEY, PretrainInfo, pretrain_info_from_nnssl,
                                                    read_pretrain_info)
from nnunet_transfer.transfer.weights import transfer_weights
from nnunet_transfer.zoo import get_record
from support.booby_trap import Payload
from support.nnunet_family import resenc_unet, write_nnssl_checkpoint, write_v2_checkpoint

DATASET = "Dataset950_Interop"
RESENC_KWARGS = {"n_stages": 3, "features_per_stage": [8, 16, 24], "conv_op": "torch.nn.modules.conv.Conv3d",
                 "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                 "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                 "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                 "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                 "nonlin": "torch.nn.modules.activation.LeakyReLU", "nonlin_kwargs": {"inplace": True}}

#: a block exactly as nnU-Net master's plan_like_dynamic writes it (like_nnssl.py), citations as nnssl stores them
MASTER_BLOCK = {
    "checkpoint_path": "/models/openmind/checkpoint_final.pth",
    "checkpoint_name": "OpenMind_MAE",
    "key_to_encoder": "encoder.stages",
    "key_to_stem": "encoder.stem",
    "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
    "key_to_lpe": None,
    "pt_num_in_channels": 1,
    "pt_used_patchsize": [160, 160, 160],
    "pt_recommended_downstream_patchsize": [160, 160, 160],
    "citations": [{"type": "pretraining", "name": "OpenMind", "apa_citations": ["Wald, T. et al. (2024)."]}],
    "pt_architecture_kwargs": {},
}


def _plans(pretrain_info=None, schemes=("CTNormalization",)) -> dict:
    plans = {
        "dataset_name": DATASET, "plans_name": "nnUNetResEncUNetLPlans", "original_median_spacing_after_transp":
        [1, 1, 1], "original_median_shape_after_transp": [32, 32, 32], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [32, 32, 32], "median_image_size_in_voxels": [32, 32, 32],
            "spacing": [1, 1, 1], "normalization_schemes": list(schemes), "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg":
            "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {},
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet."
                                                   "ResidualEncoderUNet", "arch_kwargs": RESENC_KWARGS,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
        "experiment_planner_used": "nnUNetPlannerResEncL", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 900.0, "mean": 80.0, "median": 70.0,
                                                              "min": -900.0, "percentile_00_5": -700.0,
                                                              "percentile_99_5": 600.0, "std": 150.0}}}
    if pretrain_info is not None:
        plans[PRETRAIN_INFO_KEY] = pretrain_info
    return plans


@pytest.fixture
def preprocessed(tmp_path, monkeypatch) -> Path:
    """nnU-Net folders with one dataset: plans (ResEnc, CT normalisation) and dataset.json."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_value(None))  # as `eval "$(nnunet-transfer env)"`
    folder = tmp_path / "nnUNet_preprocessed" / DATASET
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                                     "organ": 1}, "numTraining": 2, "file_ending": ".nii.gz"}))
    (folder / "nnUNetResEncUNetLPlans.json").write_text(json.dumps(_plans()))
    return folder


# ------------------------------------------------------------------------------------------ pretrain_info
def test_master_block_round_trips_unchanged():
    info = PretrainInfo.from_dict(MASTER_BLOCK)
    assert info.to_dict() == MASTER_BLOCK and list(info.to_dict()) == list(MASTER_BLOCK)
    assert read_pretrain_info(_plans(MASTER_BLOCK)).checkpoint_name == "OpenMind_MAE"
    assert read_pretrain_info(_plans()) is None


@pytest.mark.parametrize("field, value", [("pt_used_patchsize", "160"), ("keys_to_in_proj", "conv"),
                                          ("pt_num_in_channels", 0), ("citations", "x")])
def test_a_malformed_block_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PretrainInfo.from_dict({**MASTER_BLOCK, field: value})
    with pytest.raises(ValueError, match="lacks"):
        PretrainInfo.from_dict({k: v for k, v in MASTER_BLOCK.items() if k != "key_to_lpe"})


def test_block_from_an_nnssl_checkpoint_is_what_master_derives(tmp_path):
    path = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet())
    plan = torch.load(path, weights_only=True)["nnssl_adaptation_plan"]
    info = pretrain_info_from_nnssl(path, "OpenMind_MAE").to_dict()
    # like_nnssl.plan_like_dynamic, field by field
    assert info == {"checkpoint_path": str(path.resolve()), "checkpoint_name": "OpenMind_MAE",
                    "key_to_encoder": plan["key_to_encoder"], "key_to_stem": plan["key_to_stem"],
                    "keys_to_in_proj": plan["keys_to_in_proj"], "key_to_lpe": plan["key_to_lpe"],
                    "pt_num_in_channels": plan["pretrain_num_input_channels"],
                    "pt_used_patchsize": plan["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"],
                    "pt_recommended_downstream_patchsize": plan["recommended_downstream_patchsize"],
                    "citations": [], "pt_architecture_kwargs": {}}


def _network(plans: dict):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(plans).get_configuration("3d_fullres")
    return FineTuneTrainer.build_network_architecture(PlansManager(plans), cfg, 1, 2, True)


def test_transfer_check_and_our_trainer_apply_a_master_block(preprocessed, tmp_path):
    torch.manual_seed(0)
    source = resenc_unet(num_classes=3)
    path = write_nnssl_checkpoint(tmp_path / "openmind" / "checkpoint_final.pth", source)
    block = {**MASTER_BLOCK, "checkpoint_path": str(path)}
    plans = _plans(block)
    (preprocessed / "nnUNetResEncUNetLPlans.json").write_text(json.dumps(plans))

    report, mode = transfer_check(None, 950, "3d_fullres", "FineTuneTrainer", plans="nnUNetResEncUNetLPlans")
    assert "pretrain_info" in mode and "OpenMind_MAE" in mode
    encoder = [k for k in source.state_dict() if k.startswith("encoder.")]
    assert set(encoder) <= set(report.loaded)  # (and their second names decoder.encoder.*), no decoder tensor
    assert not any(k.startswith("decoder.") and not k.startswith("decoder.encoder.") for k in report.loaded)
    assert any("Wald, T. et al. (2024)." in n for n in report.notes)  # the citations, as master prints them

    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = FineTuneTrainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                              device=torch.device("cpu"))
    trainer.network = _network(plans)
    trainer_report = trainer._load_pretrained()
    assert trainer_report is not None and sorted(trainer_report.loaded) == sorted(report.loaded)
    weights = trainer.network.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in source.state_dict().items() if k.startswith("encoder."))

    # checkpoint_path null: nnU-Net master trains from scratch, and so do we
    plans[PRETRAIN_INFO_KEY]["checkpoint_path"] = None
    trainer = FineTuneTrainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                              device=torch.device("cpu"))
    trainer.network = _network(plans)
    assert trainer._load_pretrained() is None


def test_set_pretrained_writes_the_master_block_warns_and_matches_normalisation(preprocessed, tmp_path, capsys):
    path = write_nnssl_checkpoint(tmp_path / "ResEncL-OpenMind-MAE" / "checkpoint_final.pth", resenc_unet())
    plans_file = preprocessed / "nnUNetResEncUNetLPlans.json"
    assert main(["set-pretrained", str(path), "-d", "950", "-p", "nnUNetResEncUNetLPlans"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: nnssl checkpoint expects z-score" in out and "--match-normalisation" in out
    written = json.loads(plans_file.read_text())
    assert written[PRETRAIN_INFO_KEY]["checkpoint_name"] == "ResEncL-OpenMind-MAE"
    assert PretrainInfo.from_dict(written[PRETRAIN_INFO_KEY]).checkpoint_path == str(path.resolve())
    assert "pretrained_weights" in written["configurations"]["3d_fullres"]

    assert main(["set-pretrained", str(path), "-d", "950", "-p", "nnUNetResEncUNetLPlans",
                 "--match-normalisation"]) == 0
    out = capsys.readouterr().out
    matching = json.loads((preprocessed / "nnUNetResEncUNetLPlans_zscore.json").read_text())
    cfg = matching["configurations"]["3d_fullres"]
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"]
    assert cfg["data_identifier"] == "nnUNetPlans_3d_fullres_zscore" and "pretrained_weights" in cfg
    assert "nnUNetv2_preprocess -d ID -plans_name nnUNetResEncUNetLPlans_zscore" in out
    assert json.loads(plans_file.read_text())["configurations"]["3d_fullres"]["normalization_schemes"] == \
        ["CTNormalization"]  # the original plans stay as they were
    assert main(["set-pretrained", "-d", "950", "-p", "nnUNetResEncUNetLPlans", "--remove"]) == 0
    assert PRETRAIN_INFO_KEY not in json.loads(plans_file.read_text())


def test_matching_window_plans_make_nnunets_ct_normalisation_compute_the_window(preprocessed):
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    record = get_record("suprem-unet")
    expected = ExpectedNormalisation(record.expected_input.intensity, "zoo record suprem-unet")
    plans = _plans()
    assert "[-175, 250]" in normalisation_mismatch(plans, "3d_fullres", expected)
    new_file, notes = write_matching_plans(preprocessed / "nnUNetResEncUNetLPlans.json", expected)
    new = json.loads(new_file.read_text())
    assert new_file.name == "nnUNetResEncUNetLPlans_hu-175_250.json" and "exactly" in notes[0]
    assert normalisation_mismatch(new, "3d_fullres", expected) is None
    image = np.linspace(-1200, 1500, 1000).astype(np.float32).reshape(10, 10, 10)
    scheme = CTNormalization(False, new["foreground_intensity_properties_per_channel"]["0"])
    assert np.allclose(scheme.run(image.copy()), (np.clip(image, -175, 250) + 175) / 425, atol=1e-6)


# ---------------------------------------------------------------------------------- load_checkpoint names
class _Released(nnUNetTrainer):
    """nnU-Net 2.8.x's signature."""

    def load_checkpoint(self, filename_or_checkpoint):
        if isinstance(filename_or_checkpoint, str):  # read as nnU-Net reads it (weights_only=False)
            torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        self.received = filename_or_checkpoint


class _Master(nnUNetTrainer):
    """nnU-Net master's signature (the argument renamed)."""

    def load_checkpoint(self, checkpoint):
        if isinstance(checkpoint, str):  # read as nnU-Net reads it (weights_only=False)
            torch.load(checkpoint, map_location="cpu", weights_only=False)
        self.received = checkpoint


class _OnReleased(GuardedTrainer, _Released):
    pass


class _OnMaster(GuardedTrainer, _Master):
    pass


def test_installed_nnunet_uses_one_of_the_two_names():
    import inspect

    assert list(inspect.signature(nnUNetTrainer.load_checkpoint).parameters)[1] in CHECKPOINT_ARGUMENT_NAMES


@pytest.mark.parametrize("cls", [_OnReleased, _OnMaster])
@pytest.mark.parametrize("how", ["positional", "filename_or_checkpoint", "checkpoint"])
def test_load_checkpoint_works_under_both_signatures(cls, how, tmp_path):
    path = write_v2_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet())
    trainer = cls.__new__(cls)  # only the dispatch is under test: nothing else of the trainer is needed
    trainer.load_checkpoint(*([str(path)] if how == "positional" else []),
                            **({} if how == "positional" else {how: str(path)}))
    assert trainer.received == str(path)
    checkpoint = {"network_weights": {}}
    trainer.load_checkpoint(checkpoint)
    assert trainer.received is checkpoint


@pytest.mark.parametrize("cls", [_OnReleased, _OnMaster])
def test_load_checkpoint_reads_a_file_with_code_as_data_and_refuses_it(cls, tmp_path):
    marker = tmp_path / "ran"
    path = write_v2_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet(), payload=Payload(marker))
    trainer = cls.__new__(cls)
    with pytest.raises(NnUNetTransferError):
        trainer.load_checkpoint(checkpoint=str(path))
    assert not marker.exists() and not hasattr(trainer, "received")


# ------------------------------------------------------------------------------------ positional embedding
def test_resized_positional_embedding_keeps_every_token_at_its_position():
    source_grid, target_grid = (2, 3, 4), (4, 6, 8)
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in source_grid],
                                        indexing="ij"), -1)  # (2, 3, 4, 3): channel c = position along axis c
    prefix = torch.full((1, 1, 3), -7.0)  # one register token
    embedding = torch.cat([prefix, coords.reshape(1, -1, 3)], dim=1)
    resized = resize_positional_embedding(embedding, source_grid, target_grid)
    assert resized.shape == (1, 1 + 4 * 6 * 8, 3) and torch.equal(resized[:, :1], prefix)
    grid = resized[0, 1:].reshape(*target_grid, 3)
    for axis in range(3):
        values = grid[..., axis]
        # constant across the other axes, non-decreasing along its own, covering the source's range
        assert torch.allclose(values, values.select(*[(a, 0) for a in range(3) if a != axis][0]).unsqueeze(
            [a for a in range(3) if a != axis][0]).expand_as(values))
        along = values.movedim(axis, 0).reshape(target_grid[axis], -1)[:, 0]
        assert torch.all(along[1:] >= along[:-1]) and along[0] == 0 and along[-1] == source_grid[axis] - 1
    assert torch.equal(resize_positional_embedding(embedding, source_grid, source_grid), embedding)


def _primus(shape):
    from dynamic_network_architectures.architectures.primus import Primus

    return Primus(1, 48, (4, 4, 4), 2, eva_depth=1, eva_numheads=2, input_shape=shape)


def _write_primus_nnssl(path: Path, network, patch) -> Path:
    plan = {"architecture_plans": {"arch_class_name": "PrimusM", "arch_kwargs": {},
                                   "arch_kwargs_requiring_import": []},
            "pretrain_plan": {"configurations": {"onemmiso": {"spacing": [1, 1, 1], "patch_size": list(patch)}}},
            "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": list(patch),
            "key_to_encoder": "eva", "key_to_stem": "down_projection", "keys_to_in_proj": ["down_projection.proj"],
            "key_to_lpe": "eva.pos_embed"}
    return write_v2_checkpoint(path, network, trainer_name="BaseMAETrainer", extra={"nnssl_adaptation_plan": plan})


def test_primus_positional_embedding_is_interpolated_over_the_token_grid_not_truncated(tmp_path):
    torch.manual_seed(0)
    source = _primus((16, 16, 16))
    path = _write_primus_nnssl(tmp_path / "checkpoint_final.pth", source, (16, 16, 16))
    target = _primus((16, 24, 16))
    report = transfer_weights(target, path)
    expected = resize_positional_embedding(source.eva.pos_embed.detach(), (4, 4, 4), (4, 6, 4))
    assert torch.equal(target.eva.pos_embed.detach(), expected)
    assert not torch.equal(target.eva.pos_embed.detach()[:, :64], source.eva.pos_embed.detach())
    assert dict(report.adapted)["eva.pos_embed"].startswith("positional embedding token grid [4, 4, 4] -> [4, 6, 4]")
    backbone = [k for k in source.state_dict() if k.startswith(("eva.", "down_projection."))]
    assert set(backbone) <= set(report.loaded)  # 100 % of the encoder and stem, per tensor


def test_primus_m_network_builds_from_plans_without_deep_supervision_and_takes_nnssl_weights(tmp_path):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_transfer.architectures.primus_m import PRIMUS_M_CLASS_NAME, PRIMUS_M_STRIDES, PrimusMNetwork

    small = {"embed_dim": 48, "eva_depth": 1, "eva_numheads": 2}  # Primus-M's layout at test size

    def build(patch):
        return get_network_from_plans(PRIMUS_M_CLASS_NAME, {"input_shape": patch, "strides": PRIMUS_M_STRIDES,
                                                            **small}, [], 1, 3, deep_supervision=False)

    torch.manual_seed(0)
    source, target = build([32, 32, 32]), build([64, 32, 32])
    assert isinstance(target, PrimusMNetwork) and target.token_grid == (8, 4, 4)
    assert target(torch.zeros(1, 1, 64, 32, 32)).shape == (1, 3, 64, 32, 32)
    with pytest.raises(ValueError, match="no deep supervision"):
        target.decoder.deep_supervision = True  # what nnU-Net's set_deep_supervision_enabled(True) does
    with pytest.raises(ValueError, match="multiple of the patch embedding"):
        build([60, 32, 32])
    path = _write_primus_nnssl(tmp_path / "checkpoint_final.pth", source, (32, 32, 32))
    report = transfer_weights(target, path)
    backbone = [k for k in source.state_dict() if k.startswith(("eva.", "down_projection."))]
    loaded = [k for k in backbone if k in report.loaded]
    assert len(loaded) / len(backbone) >= 0.95 and len(loaded) == len(backbone)
    assert torch.equal(target.eva.pos_embed.detach(),
                       resize_positional_embedding(source.eva.pos_embed.detach(), (4, 4, 4), (8, 4, 4)))


def test_match_normalisation_for_the_record_the_plans_already_hold(preprocessed, tmp_path, capsys):
    from nnunet_transfer.transfer.record import PretrainedRecord, write_record

    weights = tmp_path / "supervised_suprem_unet_2100.pth"  # the zoo knows it by its released name
    torch.save({"net": {"module.backbone.down_tr64.ops.0.conv1.weight": torch.zeros(32, 1, 3, 3, 3)}}, weights)
    plans_file = preprocessed / "nnUNetResEncUNetLPlans.json"
    write_record(plans_file, "3d_fullres", PretrainedRecord(checkpoint=str(weights), min_fraction=0.0))
    recorded = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]["pretrained_weights"]
    assert main(["set-pretrained", "-d", "950", "-p", "nnUNetResEncUNetLPlans", "--match-normalisation"]) == 0
    assert "nnUNetResEncUNetLPlans_hu-175_250" in capsys.readouterr().out
    new = json.loads((preprocessed / "nnUNetResEncUNetLPlans_hu-175_250.json").read_text())
    assert new["configurations"]["3d_fullres"]["pretrained_weights"] == recorded  # the same record comes along
    assert new["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"] == 250.0


def test_expected_normalisation_from_the_file_kind_and_from_malformed_plans():
    from nnunet_transfer.transfer.normalisation import expected_normalisation

    assert expected_normalisation("checkpoint_final.pth", None, is_nnssl=True).intensity.kind == "zscore"
    assert expected_normalisation("resnet_50_23dataset.pth").source == "zoo record medicalnet-resnet50-23dataset"
    assert expected_normalisation("other.pth", {"configurations": [1]}) is None  # nothing states it
    ct = expected_normalisation("other.pth", {"configurations": {"3d_fullres": {"normalization_schemes": [
        "CTNormalization"]}}, "foreground_intensity_properties_per_channel": {"0": {"mean": "x"}}})
    assert ct.intensity.kind == "ct" and ct.properties is None  # malformed statistics: not stated
