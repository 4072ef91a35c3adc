"""Public model families: our networks match the official definitions, the readers recognise each released format,
and each family's backbone loads into its own architecture (>= 95 %), with a report of what did not load.

The released files are made at test time (tests/support/public_releases.py): the network built with the release's
constructor arguments, wrapped and prefixed as the project saves it, written with torch.save and read back with the
safe reader, as a downloaded file would be.
"""

from __future__ import annotations

import importlib.util
import os
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_transfer.architectures.networks import NETWORKS, fit_patch_size
from nnunet_transfer.architectures.public.stunet import STUNET_SIZES, STUNet
from nnunet_transfer.architectures.public.unet3d import UNet3D
from nnunet_transfer.pretrained.formats import registered_formats
from nnunet_transfer.pretrained.formats.suprem import FORMAT as SUPREM
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.backbone import MIN_BACKBONE_FRACTION, load_backbone
from support import public_releases as rel

ROOT = Path(__file__).resolve().parents[1]
#: Swin UNETR and SegResNet come from MONAI (the extra [monai], installed in CI)
needs_monai = pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="MONAI is not installed")
MONAI_CASES = {"suprem-swinunetr", "suprem-segresnet", "universal-swinunetr", "voco"}

#: family -> (builder of the released object, expected format, plan-arch name of its own architecture,
#: filtered-out key prefixes)
CASES = {
    "stunet": (lambda: rel.stunet_release("s"), "stunet", "stunet-s", ("seg_outputs.",)),
    "genesis": (rel.genesis_release, "models-genesis", "genesis-unet3d", ("out_tr.",)),
    "suprem-unet": (lambda: rel.suprem_release("unet"), "suprem", "suprem-unet", ("controller.", "precls_conv.")),
    "suprem-swinunetr": (lambda: rel.suprem_release("swinunetr"), "suprem", "swinunetr", ("controller.", "GAP.")),
    "suprem-segresnet": (lambda: rel.suprem_release("segresnet"), "suprem", "segresnet", ("conv_final.2.",)),
    "universal-unet": (lambda: rel.suprem_release("unet", rel.UNIVERSAL_ORGANS), "universal-model", "suprem-unet",
                       ("organ_embedding", "text_to_vision.")),
    "universal-swinunetr": (lambda: rel.suprem_release("swinunetr", rel.UNIVERSAL_ORGANS, top_level=True),
                            "universal-model", "swinunetr", ("controller.",)),
    "voco": (rel.voco_release, "voco", "swinunetr-v2", ()),
    "dodnet": (rel.dodnet_release, "dodnet", "dodnet-unet3d", ("controller.", "GAP.")),
}

PUBLIC_FORMATS = {case[1] for case in CASES.values()}
_NETWORK_CACHE: dict = {}


def network(name: str, input_channels: int = 1, num_classes: int = 2):
    """The registry's network ``name`` as nnU-Net builds it (one instance per name and shape in this module; the
    Swin UNETRs are the ones the release files were made from, building them is slow)."""
    key = (name, input_channels, num_classes)
    if name.startswith("swinunetr") and (input_channels, num_classes) == (1, 2):
        return rel.swin_unetr(use_v2=name == "swinunetr-v2")
    if key not in _NETWORK_CACHE:
        spec = NETWORKS[name]
        kwargs = {**spec.fixed_kwargs, "strides": spec.strides([[1, 1, 1]] + [[2, 2, 2]] * 5)}
        torch.manual_seed(1)
        _NETWORK_CACHE[key] = pydoc.locate(spec.class_name)(input_channels=input_channels, num_classes=num_classes,
                                                            deep_supervision=False, **kwargs)
    return _NETWORK_CACHE[key]


class _ReleaseFiles(dict):
    """family -> path of its released-format file, written on first use."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, family: str) -> Path:
        torch.manual_seed(0)
        self[family] = rel.save(CASES[family][0](), self.folder / f"{family}.pth")
        return self[family]


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    return _ReleaseFiles(tmp_path_factory.mktemp("releases"))


# ----------------------------------------------------------------------------------------------- the networks
def test_stunet_sizes_have_the_published_parameter_counts():
    # STU-Net README: S 14.6M, B 58.26M, L 440.30M, H 1457.33M (105 TotalSegmentator classes)
    published = {"s": 14.6, "b": 58.26, "l": 440.30, "h": 1457.33}
    with torch.device("meta"):
        for size, millions in published.items():
            net = STUNet(1, 105, *STUNET_SIZES[size], strides=rel.STUNET_RELEASE_STRIDES)
            assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(millions, abs=0.01), size


def test_official_names_and_shapes():
    # key names and first-convolution shapes of the released checkpoints (from each project's model code)
    stunet = STUNet(1, 105, *STUNET_SIZES["b"], strides=rel.STUNET_RELEASE_STRIDES).state_dict()
    assert stunet["conv_blocks_context.0.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
    assert stunet["conv_blocks_context.5.0.conv3.weight"].shape == (512, 512, 1, 1, 1)
    assert stunet["upsample_layers.0.conv.weight"].shape == (512, 512, 1, 1, 1)
    assert stunet["seg_outputs.4.weight"].shape == (105, 32, 1, 1, 1)
    unet = UNet3D(1, 1).state_dict()
    assert unet["down_tr64.ops.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
    assert unet["down_tr512.ops.1.conv1.weight"].shape == (512, 256, 3, 3, 3)
    assert unet["up_tr256.up_conv.weight"].shape == (512, 512, 2, 2, 2)
    assert unet["up_tr256.ops.0.conv1.weight"].shape == (256, 768, 3, 3, 3)
    assert "down_tr64.ops.0.bn1.running_mean" in unet
    # the Universal Model's README: U-Net 19.08M parameters
    assert sum(p.numel() for p in UNet3D(1, 32).parameters()) / 1e6 == pytest.approx(19.08, abs=0.01)
    dodnet = network("dodnet-unet3d").state_dict()
    assert dodnet["conv1.weight"].shape == (32, 1, 3, 3, 3) and "conv1.bias" not in dodnet
    assert dodnet["layer4.0.downsample.2.weight"].shape == (256, 256, 1, 1, 1)
    assert dodnet["precls_conv.2.weight"].shape == (8, 32, 1, 1, 1)


def test_single_output_networks_refuse_deep_supervision():
    with pytest.raises(ValueError, match="FineTuneTrainer"):
        UNet3D(1, 2, deep_supervision=True)


def test_monai_missing_names_the_extra():
    code = "import sys; sys.modules['monai'] = None\nimport nnunet_transfer.architectures.public.monai_networks"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode != 0
    assert "pip install nnunet-transfer[monai]" in done.stderr.strip().splitlines()[-1]


def test_fit_patch_size_rounds_to_the_networks_multiple():
    assert fit_patch_size([20, 160, 112], [8, 8, 8]) == [16, 160, 112]
    assert fit_patch_size([20, 96, 112], [32, 32, 32], minimum=64) == [64, 96, 96]


# ----------------------------------------------------------------------------------------------- the readers
@pytest.mark.parametrize("family", [pytest.param(f, marks=needs_monai) if f in MONAI_CASES else f for f in CASES])
def test_family_backbone_loads_into_its_own_architecture(release_files, family):
    _, format_name, arch, filtered_prefixes = CASES[family]
    source = read_source_weights(release_files[family])
    assert source.format == format_name
    reading = source.reading
    assert reading.metadata["architecture"] == arch
    for prefix in filtered_prefixes:
        assert any(k.startswith(prefix) for k in reading.filtered), prefix
    assert not any(k.startswith(("module.", "backbone.")) for k in reading.tensors)
    net = network(arch)
    key = next(k for k, v in reading.tensors.items() if v.is_floating_point())
    with torch.no_grad():
        net.state_dict()[key].zero_()
    transfer = load_backbone(net, reading.tensors, family=source.family, source=family, filtered=reading.filtered)
    assert transfer.fraction >= MIN_BACKBONE_FRACTION and transfer.fraction == 1.0, str(transfer)
    # the values are the file's; the task head is reported as new, not as missing
    assert torch.equal(net.state_dict()[key], reading.tensors[key])
    assert transfer.report.reinitialised
    if family == "voco":  # an encoder: the Swin UNETR decoder is new
        assert transfer.report.missing and all(k.startswith("decoder") for k in transfer.report.missing)
    else:
        assert not transfer.report.missing
    assert f"{len(reading.tensors)} of {len(reading.tensors)} backbone tensors loaded (100.0%)" in str(transfer)


@needs_monai
def test_voco_v2_encoder_in_a_v1_network_reports_the_missing_blocks(release_files):
    reading = read_source_weights(release_files["voco"]).reading
    transfer = load_backbone(network("swinunetr"), reading.tensors, family="VoCo", source="voco")
    v2_blocks = sorted(k for k in reading.tensors if k.startswith("swinViT.layers") and ".layers" in k
                       and k.split(".")[1][-1] == "c")
    assert v2_blocks and sorted(transfer.not_loaded) == v2_blocks
    assert all(why == "no tensor of this name in the network" for why in transfer.not_loaded.values())
    assert transfer.fraction < 1.0
    assert "swinViT.layers1c.0.layer.conv1.conv.weight" in str(transfer)


def test_another_network_loads_what_matches_and_lists_the_rest(release_files):
    reading = read_source_weights(release_files["dodnet"]).reading
    transfer = load_backbone(network("genesis-unet3d"), reading.tensors, family="DoDNet", source="dodnet")
    assert transfer.fraction == 0.0 and len(transfer.not_loaded) == len(reading.tensors)
    # a Models Genesis file in SuPreM's U-Net (the same UNet3D) loads fully
    reading = read_source_weights(release_files["genesis"]).reading
    assert load_backbone(network("suprem-unet"), reading.tensors, family="x", source="genesis").fraction == 1.0


def test_the_transfer_path_reads_the_released_file_itself(release_files):
    # what set-pretrained, transfer-check and the trainers' record do: a path in, the format recognised on the way
    from nnunet_transfer.transfer.weights import transfer_weights

    report = transfer_weights(network("suprem-unet"), release_files["suprem-unet"],
                              head_patterns=UNet3D.head_prefixes)
    assert report.n_loaded == 104 and not report.missing and not report.unexpected
    assert any(k.startswith("controller.") for k in report.skipped)  # the language-driven head, filtered


def test_input_channels_are_adapted_for_a_multimodal_target(release_files):
    reading = read_source_weights(release_files["genesis"]).reading
    transfer = load_backbone(network("genesis-unet3d", input_channels=2), reading.tensors, family="Models Genesis",
                             source="genesis")
    assert transfer.fraction == 1.0
    assert [k for k, _ in transfer.report.adapted] == ["down_tr64.ops.0.conv1.weight"]


def test_formats_claim_only_their_own_files():
    others = {"nnU-Net v2": {"network_weights": {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(2, 1, 3, 3, 3)},
                             "trainer_name": "nnUNetTrainer"},
              "MedicalNet": {"state_dict": {"module.conv1.weight": torch.zeros(64, 1, 7, 7, 7)}},
              "not a checkpoint": [1, 2, 3]}
    for name, obj in others.items():
        claimed = [fmt.name for fmt in registered_formats() if fmt.detect(obj) and fmt.name in PUBLIC_FORMATS]
        assert not claimed, f"{name} claimed by {claimed}"


def test_stunet_model_file_brings_its_v1_plans(tmp_path):
    import pickle

    model = rel.save(rel.stunet_release("s"), tmp_path / "small_ep4k.model")
    plans = {"plans_per_stage": {0: {"patch_size": [128, 128, 128], "current_spacing": [1.5, 1.5, 1.5],
                                     "conv_kernel_sizes": [[3, 3, 3]] * 6}}}
    with open(tmp_path / "small_ep4k.model.pkl", "wb") as f:  # nnU-Net v1 writes it with pickle.dump (plain data)
        pickle.dump({"init": (), "name": "STUNetTrainer_small", "class": "STUNetTrainer_small", "plans": plans}, f)
    source = read_source_weights(model)
    assert source.format == "stunet" and source.plans == plans
    assert any("STUNetTrainer_small" in note for note in source.notes)


def test_malformed_files_are_refused_or_not_claimed():
    # two names that become one once the prefixes are gone: refused with CheckpointFormatError, never a KeyError
    bad = {"net": {"module.backbone.down_tr64.ops.0.conv1.weight": torch.zeros(1),
                   "backbone.down_tr64.ops.0.conv1.weight": torch.zeros(1)}}
    assert SUPREM.detect(bad) is False
    with pytest.raises(CheckpointFormatError, match="both become"):
        SUPREM.read(bad, "bad.pth")
    for fmt in [f for f in registered_formats() if f.name in PUBLIC_FORMATS]:  # detect never raises
        for obj in (None, 3, {"net": 5}, {"state_dict": {"a": "b"}}, {"net": {1: torch.zeros(1)}}):
            assert fmt.detect(obj) in (True, False)


def test_no_registered_reader_raises_in_detect_on_keys_that_are_not_strings():
    """``detect`` never raises: a state dict whose keys are not strings is simply not recognised by any reader."""
    from nnunet_transfer.pretrained.formats import registered_formats

    odd = {"net": {1: torch.zeros(1)}, "state_dict": {(1, 2): torch.zeros(1)}}
    for fmt in registered_formats():
        assert fmt.detect(odd) in (True, False), fmt.name
