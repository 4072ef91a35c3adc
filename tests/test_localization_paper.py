"""The localisation paper's U-Net (plans from plan-arch -a localization-paper; encoder shapes, max-pooling, batch
norm, dropout; the localiser takes the same encoder) and its image preprocessing (grey, normalised, CLAHE, gamma)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from PIL import Image
from torch import nn

from nnunet_transfer.architectures.localization_unet import (LOCALIZATION_PAPER_CLASS_NAME, LocalizationPaperUNet,
                                                             describe_encoder, localization_paper_configuration)
from nnunet_transfer.architectures.localizer import LocalizerNetwork
from nnunet_transfer.data.image_preprocessing import localization_paper_image

#: an nnU-Net 2d configuration as the default planner writes it (PlainConvUNet), patch not a multiple of 16
NNUNET_2D = {
    "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 12,
    "patch_size": [100, 130], "median_image_size_in_voxels": [100, 130], "spacing": [1.0, 1.0],
    "normalization_schemes": ["RGBTo01Normalization"], "use_mask_for_norm": [False],
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3, "features_per_stage": [32, 64, 128], "conv_op": "torch.nn.modules.conv.Conv2d",
                        "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 3,
                        "n_conv_per_stage_decoder": [2] * 2, "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
}


def _build(cfg: dict, deep_supervision: bool = True) -> nn.Module:
    cm = ConfigurationManager(cfg)
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, 2, allow_init=True,
                                  deep_supervision=deep_supervision)


def test_paper_unet_from_plans_has_the_papers_encoder_and_shapes():
    cfg = localization_paper_configuration(NNUNET_2D)
    assert cfg["patch_size"] == [96, 128] and cfg["batch_size"] == 12 and cfg["spacing"] == [1.0, 1.0]
    net = _build(cfg)
    assert isinstance(net, LocalizationPaperUNet)
    x = torch.randn(2, 1, 96, 128)
    skips = net.encoder(x)
    assert [tuple(s.shape[1:]) for s in skips] == [(64, 96, 128), (128, 48, 64), (256, 24, 32), (512, 12, 16),
                                                   (1024, 6, 8)]
    modules = list(net.encoder.modules())
    assert sum(isinstance(m, nn.MaxPool2d) and tuple(m.kernel_size) == (2, 2) for m in modules) == 4
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 10
    assert sum(isinstance(m, nn.ReLU) for m in modules) == 10 and not any(isinstance(m, nn.LeakyReLU) for m in modules)
    assert isinstance(net.encoder.stages[-1][-1], nn.Dropout2d) and net.encoder.stages[-1][-1].p == 0.5
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 96 // 2 ** i, 128 // 2 ** i) for i in range(4)]
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.encoder(x)[-1], net.encoder(x)[-1])  # dropout off in eval mode

    # the localiser trains exactly this encoder: its encoder.* keys and shapes are the U-Net's
    localizer = LocalizerNetwork.from_plans(ConfigurationManager(cfg), 1, 2)
    unet_encoder = {k: v.shape for k, v in net.state_dict().items() if k.startswith("encoder.")}
    assert {k: v.shape for k, v in localizer.state_dict().items() if k.startswith("encoder.")} == unet_encoder
    assert "the localisation paper's U-Net encoder" in describe_encoder(localizer, LOCALIZATION_PAPER_CLASS_NAME)
    plain = _build(NNUNET_2D)
    assert "not the paper's encoder" in describe_encoder(plain, NNUNET_2D["architecture"]["network_class_name"])
    assert "strided convolutions" in describe_encoder(plain, NNUNET_2D["architecture"]["network_class_name"])


def test_3d_and_too_small_patches():
    cfg3d = dict(NNUNET_2D, patch_size=[20, 40, 33], spacing=[1.0, 1.0, 1.0])
    net = _build(localization_paper_configuration(cfg3d, "3d_fullres"), deep_supervision=False)
    assert net(torch.randn(1, 1, 16, 32, 32)).shape == (1, 2, 16, 32, 32)
    with pytest.raises(ValueError, match="at least 16"):
        localization_paper_configuration(dict(NNUNET_2D, patch_size=[12, 64]))


def test_plan_arch_names_it(tmp_path, monkeypatch):
    from nnunet_transfer.planning.plan_arch import architecture_configuration, parse_arch

    assert architecture_configuration(NNUNET_2D, "localization-paper", None, "2d")["architecture"][
        "network_class_name"] == LOCALIZATION_PAPER_CLASS_NAME
    with pytest.raises(ValueError, match="takes no decoder"):
        parse_arch("localization-paper", "mleam")


def test_preprocessing_is_grey_normalised_clahe_then_gamma():
    from skimage.exposure import equalize_adapthist

    rng = np.random.default_rng(0)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = 100 + rng.integers(0, 10, (64, 32, 1))  # low-contrast half: CLAHE stretches it
    rgb[:, 32:] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None]
    rgb[..., 1] //= 2  # not grey: the ITU-R 601 weights matter
    out = localization_paper_image(rgb)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and out.min() == 0 and out.max() >= 250

    grey = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    z = (grey - grey.mean()) / grey.std()
    rescaled = (z - z.min()) / (z.max() - z.min())
    clahe = equalize_adapthist(rescaled, kernel_size=(8, 8), clip_limit=2 / 256, nbins=256)
    np.testing.assert_allclose(out, np.round(255 * clahe ** (1 / 1.2)), atol=1)
    # CLAHE raised the contrast of the flat half above what the global rescaling gives it
    assert (out[:, :32] / 255.0).std() > 2 * rescaled[:, :32].std()
    # gamma 1.2 brightens: the output is above the CLAHE result in the mid-tones
    mid = (clahe > 0.2) & (clahe < 0.8)
    assert (out[mid] / 255.0 > clahe[mid]).all()


def test_convert_kvasir_with_the_papers_preprocessing(tmp_path, raw):
    from nnunet_transfer.data.convert_kvasir import convert_kvasir
    from nnunet_transfer.data.synthetic import synth_kvasir

    synth_kvasir(tmp_path / "Kvasir-SEG", cases=2, seed=0, size=(40, 48))
    grey = convert_kvasir(tmp_path / "Kvasir-SEG", 941, image_preprocessing="localization-paper")
    dataset = json.loads((grey / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "rgb_to_0_1"}
    image = np.asarray(Image.open(sorted((grey / "imagesTr").iterdir())[0]))
    assert image.shape == (40, 48) and image.dtype == np.uint8

    resized = convert_kvasir(tmp_path / "Kvasir-SEG", 942, image_preprocessing="attention-paper")
    assert json.loads((resized / "dataset.json").read_text())["channel_names"] == \
        {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
    image = np.asarray(Image.open(sorted((resized / "imagesTr").iterdir())[0]))
    label = np.asarray(Image.open(sorted((resized / "labelsTr").iterdir())[0]))
    assert image.shape == (256, 256, 3) and label.shape == (256, 256)
    assert set(np.unique(label)) == {0, 1}
    with pytest.raises(ValueError, match="unknown image preprocessing"):
        convert_kvasir(tmp_path / "Kvasir-SEG", 943, image_preprocessing="clahe")
