"""Files in the released formats of the public model families, with random weights, made at test time.

Each builder instantiates the family's network with the constructor arguments of its released checkpoint (our
classes carry the official parameter names; MONAI's classes are the official ones) and wraps the state dict as the
project's own saving code does (see nnunet_transfer/pretrained/formats/*). Nothing here is downloaded or committed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict

import torch

from nnunet_transfer.architectures.public.dodnet_unet3d import DoDNetUNet3D
from nnunet_transfer.architectures.public.stunet import STUNET_SIZES, STUNet
from nnunet_transfer.architectures.public.unet3d import UNet3D

#: stride-2 downsamplings of STU-Net's released models (TotalSegmentator plans, 128^3 patches), input stage first
STUNET_RELEASE_STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 5
SUPREM_ORGANS, UNIVERSAL_ORGANS = 25, 32


def _prefixed(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def language_head(backbone_channels: int, organs: int) -> Dict[str, torch.Tensor]:
    """The Universal Model's language-driven head as its state dict holds it (precls_conv, GAP, controller, ...)."""
    dec = 48 if backbone_channels == 768 else 64
    return {"precls_conv.0.weight": torch.ones(dec), "precls_conv.0.bias": torch.zeros(dec),
            "precls_conv.2.weight": torch.randn(8, dec, 1, 1, 1), "precls_conv.2.bias": torch.zeros(8),
            "GAP.0.weight": torch.ones(backbone_channels), "GAP.0.bias": torch.zeros(backbone_channels),
            "GAP.3.weight": torch.randn(256, backbone_channels, 1, 1, 1), "GAP.3.bias": torch.zeros(256),
            "controller.weight": torch.randn(153, 512, 1, 1, 1), "controller.bias": torch.zeros(153),
            "organ_embedding": torch.randn(organs, 512),
            "text_to_vision.weight": torch.randn(256, 512), "text_to_vision.bias": torch.zeros(256)}


@lru_cache(maxsize=2)
def swin_unetr(use_v2: bool = False):
    """MONAI's Swin UNETR (feature size 48, 2 classes) as our class builds it; one instance per version (slow)."""
    from nnunet_transfer.architectures.public.monai_networks import SwinUNETR

    torch.manual_seed(0)
    return SwinUNETR(1, 2, use_v2=use_v2)


def stunet_release(size: str = "s") -> dict:
    """nnU-Net v1 ``.model`` of STU-Net (``NetworkTrainer.save_checkpoint``), 105 TotalSegmentator classes."""
    network = STUNet(1, 105, *STUNET_SIZES[size], strides=STUNET_RELEASE_STRIDES)
    return {"epoch": 4000, "state_dict": network.state_dict(), "optimizer_state_dict": {},
            "plot_stuff": ([0.5], [0.4], [0.3], [0.6]), "best_stuff": (3999, 0.3, 0.3, 0.3)}


def genesis_release() -> dict:
    """``Genesis_Chest_CT.pt``: the DataParallel UNet3D (one output channel) under ``state_dict``."""
    return {"epoch": 100, "state_dict": _prefixed(UNet3D(1, 1).state_dict(), "module."), "optimizer_state_dict": {}}


def suprem_release(backbone: str, organs: int = SUPREM_ORGANS, top_level: bool = False) -> dict:
    """SuPreM's (or, with 32 organs / ``top_level``, the Universal Model's) ``{"net": ...}`` checkpoint."""
    if backbone == "segresnet":
        from nnunet_transfer.architectures.public.monai_networks import SegResNet

        return {"net": _prefixed(SegResNet(1, organs).state_dict(), "module."), "epoch": 2100}
    if backbone == "unet":
        state = {k: v for k, v in UNet3D(1, 1).state_dict().items() if not k.startswith("out_tr.")}
        channels = 512
    else:  # SuPreM's backbone copy of Swin UNETR has MONAI's keys without the output layer ``out``
        state = {k: v.clone() for k, v in swin_unetr().state_dict().items() if not k.startswith("out.")}
        channels = 768
    body = state if top_level else _prefixed(state, "backbone.")
    return {"net": _prefixed({**body, **language_head(channels, organs)}, "module."), "optimizer": {},
            "scheduler": {}, "epoch": 2100}


def voco_release(prefix: str = "backbone.") -> Dict[str, torch.Tensor]:
    """VoCo's Swin UNETR v2 encoder (``swinViT`` + ``encoder1..4``, ``encoder10``; feature size 48) as a flat dict."""
    state = swin_unetr(use_v2=True).state_dict()
    encoder = {k: v.clone() for k, v in state.items() if k.startswith(("swinViT.", "encoder"))}
    return _prefixed(encoder, prefix)


def dodnet_release() -> Dict[str, torch.Tensor]:
    """``MOTS_DynConv_*.pth``: ``torch.save(model.state_dict())`` of the DataParallel unet3D, 7 tasks."""
    state = {k: v for k, v in DoDNetUNet3D(1, 2).state_dict().items() if not k.startswith("seg_head.")}
    state.update({"GAP.0.weight": torch.ones(256), "GAP.0.bias": torch.zeros(256),
                  "controller.weight": torch.randn(162, 256 + 7, 1, 1, 1), "controller.bias": torch.zeros(162)})
    return _prefixed(state, "module.")


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


#: family -> builder of its released object, and the plan-arch name of its own architecture
RELEASES: Dict[str, tuple[Callable[[], object], str]] = {
    "STU-Net": (lambda: stunet_release("s"), "stunet-s"),
    "Models Genesis": (genesis_release, "genesis-unet3d"),
    "SuPreM unet": (lambda: suprem_release("unet"), "suprem-unet"),
    "SuPreM swinunetr": (lambda: suprem_release("swinunetr"), "swinunetr"),
    "SuPreM segresnet": (lambda: suprem_release("segresnet"), "segresnet"),
    "Universal unet": (lambda: suprem_release("unet", UNIVERSAL_ORGANS), "suprem-unet"),
    "Universal swinunetr": (lambda: suprem_release("swinunetr", UNIVERSAL_ORGANS, top_level=True), "swinunetr"),
    "VoCo": (voco_release, "swinunetr-v2"),
    "DoDNet": (dodnet_release, "dodnet-unet3d"),
}
