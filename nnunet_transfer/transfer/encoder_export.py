"""``nnunet-transfer extract-encoder``: the encoder (stem included) of a checkpoint as a plain state dict.

For classification heads, other frameworks, or a later ``set-pretrained``: the file holds only ``{name: tensor}``
(``.pth`` written by ``torch.save``, readable with ``weights_only=True``; or ``.safetensors``), no pickled objects.

Which tensors are the encoder:

- nnU-Net-style networks (nnU-Net's U-Nets, MOTS/DoDNet, our Med3D/MLEAM/attention networks): every key under
  ``encoder.`` (the stem is part of it: ``encoder.stages.0`` or ``encoder.stem``); nnU-Net's second names
  (``decoder.encoder.*``) are not repeated;
- MedicalNet 3D ResNets (``conv1``, ``bn1``, ``layer1..4``): everything but the segmentation head ``conv_seg``.

``layout="medicalnet"`` writes a Med3D ResNet encoder (ours: ``encoder.conv1.weight`` ...) as MedicalNet releases its
files, ``{'state_dict': {'module.conv1.weight': ...}}``, so whatever reads a released MedicalNet file
(``plan-arch --weights``, ``Med3DResNet.load_medicalnet``, the registry's ``verify_checkpoint``) takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch

from nnunet_transfer.architectures.med3d import HEAD_KEY_PREFIXES
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError
from nnunet_transfer.transfer.weights import StateDictSource, read_state_dict
from nnunet_transfer.utils.atomic import write_atomically

ENCODER_PREFIX = "encoder."
OUTPUT_SUFFIXES = (".pth", ".pt", ".safetensors")
#: ``plain``: ``{name: tensor}``; ``medicalnet``: MedicalNet's released layout (see the module docstring)
LAYOUTS = ("plain", "medicalnet")
MEDICALNET_KEY_PREFIX = "module."


def medicalnet_layout(encoder: Dict[str, torch.Tensor],
                      source: str = "state dict") -> Dict[str, Dict[str, torch.Tensor]]:
    """``{'state_dict': {'module.<key>': tensor}}`` of a prefix-free Med3D ResNet encoder state dict."""
    if "conv1.weight" not in encoder or not any(k.startswith("layer1.") for k in encoder):
        raise CheckpointFormatError(
            f"{source}: the encoder is not a Med3D ResNet (no conv1/layer1 keys; first keys: {list(encoder)[:4]}), "
            "so it cannot be written in MedicalNet's layout; write the plain layout instead")
    return {"state_dict": {MEDICALNET_KEY_PREFIX + k: v for k, v in encoder.items()}}


def encoder_state_dict(source: StateDictSource, strip_prefix: bool = False) -> Dict[str, torch.Tensor]:
    """The encoder tensors of ``source`` (a checkpoint file or state dict), see the module docstring."""
    state = read_state_dict(source)
    name = str(source) if isinstance(source, (str, Path)) else "state dict"
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if encoder:
        if strip_prefix:
            encoder = {k[len(ENCODER_PREFIX):]: v for k, v in encoder.items()}
        return encoder
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):  # MedicalNet ResNet
        return {k: v for k, v in state.items() if not k.startswith(HEAD_KEY_PREFIXES)}
    raise CheckpointFormatError(
        f"{name} has no encoder tensors: no key starts with {ENCODER_PREFIX!r} and it is not a MedicalNet ResNet "
        f"(conv1/layer1..4). First keys: {list(state)[:6]}")


def extract_encoder(checkpoint: StateDictSource, output: Union[str, Path], strip_prefix: bool = False,
                    overwrite: bool = False, layout: str = "plain") -> Path:
    """Write the encoder of ``checkpoint`` (a file or a state dict) to ``output`` (``.pth``/``.pt`` or
    ``.safetensors``; ``layout="medicalnet"``: ``.pth``/``.pt`` only); returns the path."""
    output = Path(output)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown encoder file layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if output.suffix not in OUTPUT_SUFFIXES or (layout == "medicalnet" and output.suffix == ".safetensors"):
        allowed = OUTPUT_SUFFIXES if layout == "plain" else (".pth", ".pt")
        raise ValueError(f"{output}: the {layout} encoder file must end in one of {', '.join(allowed)}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it or choose another name")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} does not exist; create it first")
    # own, contiguous storage per tensor: safetensors refuses shared or strided tensors
    encoder = {k: v.detach().contiguous().clone()
               for k, v in encoder_state_dict(checkpoint, strip_prefix or layout == "medicalnet").items()}
    if layout == "medicalnet":
        name = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "state dict"
        medicalnet = medicalnet_layout(encoder, name)
        return write_atomically(output, lambda tmp: torch.save(medicalnet, tmp))
    if output.suffix == ".safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError as exc:
            raise ImportError(f"writing {output} needs the 'safetensors' package: pip install safetensors, "
                              "or write a .pth file") from exc
        return write_atomically(output, lambda tmp: save_file(encoder, str(tmp)))
    return write_atomically(output, lambda tmp: torch.save(encoder, tmp))
