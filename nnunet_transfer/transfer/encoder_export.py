"""``nnunet-transfer extract-encoder``: the encoder (stem included) of a checkpoint as a plain state dict.

For classification heads, other frameworks, or a later ``set-pretrained``: the file holds only ``{name: tensor}``
(``.pth`` written by ``torch.save``, readable with ``weights_only=True``; or ``.safetensors``), no pickled objects.

Which tensors are the encoder:

- a network (an ``nn.Module``, e.g. the trainer's): the tensors under its ``key_to_encoder`` and ``key_to_stem``
  (dynamic-network-architectures' convention, which every network we ship follows);
- a checkpoint of an nnU-Net-style network (nnU-Net's U-Nets, MOTS/DoDNet, our Med3D/MLEAM/attention networks): a
  file holds no network, but all of these keep encoder and stem under :data:`ENCODER_PREFIX` (their ``key_to_encoder``
  and ``key_to_stem`` start with ``encoder``): every key under ``encoder.``; nnU-Net's second names
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

from torch import nn

from nnunet_transfer.errors import InvalidValueError, WrongKindError
from nnunet_transfer.pretrained.formats.medicalnet import looks_like_medicalnet, medicalnet_layout, split_head
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError
from nnunet_transfer.transfer.weight_values import check_weight_values
from nnunet_transfer.transfer.weights import StateDictSource, read_source
from nnunet_transfer.utils.atomic import write_atomically

#: where nnU-Net-style networks keep encoder and stem, for checkpoints (which hold no network to ask)
ENCODER_PREFIX = "encoder."
OUTPUT_SUFFIXES = (".pth", ".pt", ".safetensors")
#: ``plain``: ``{name: tensor}``; ``medicalnet``: MedicalNet's released layout (see the module docstring)
LAYOUTS = ("plain", "medicalnet")

EncoderSource = Union[StateDictSource, nn.Module]


def network_encoder_prefixes(network: nn.Module) -> tuple:
    """Key prefixes of ``network``'s encoder and stem (its ``key_to_encoder``/``key_to_stem``), or a TypeError."""
    keys = [getattr(network, a, None) for a in ("key_to_encoder", "key_to_stem")]
    if keys[0] is None:
        raise WrongKindError(
            f"{type(network).__name__} does not say where its encoder is (no key_to_encoder); give its "
            "state dict instead, whose encoder is read from the 'encoder.' keys")
    return tuple(dict.fromkeys(f"{k}." if k else "" for k in keys if k is not None))


def encoder_state_dict(source: EncoderSource, strip_prefix: bool = False) -> Dict[str, torch.Tensor]:
    """The encoder tensors of ``source`` (a network, a checkpoint file or a state dict), see the module docstring.

    ``strip_prefix``: keys relative to the encoder (without ``encoder.``; a network's own ``key_to_encoder``).
    """
    if isinstance(source, nn.Module):
        prefixes = network_encoder_prefixes(source)
        state = dict(source.state_dict())
        encoder = {k: v for k, v in state.items() if k.startswith(prefixes)}
        if strip_prefix and source.key_to_encoder:
            top = source.key_to_encoder.split(".")[0] + "."
            encoder = {k[len(top):] if k.startswith(top) else k: v for k, v in encoder.items()}
        return encoder
    weights = read_source(source)  # read once: the file, folder or zip is not opened again
    state, name = weights.tensors, weights.source if weights.container != "memory" else "state dict"
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if encoder:
        if strip_prefix:
            encoder = {k[len(ENCODER_PREFIX):]: v for k, v in encoder.items()}
        return encoder
    if looks_like_medicalnet(state):
        return split_head(state)[0]
    raise CheckpointFormatError(
        f"{name} has no encoder tensors: no key starts with {ENCODER_PREFIX!r} and it is not a MedicalNet ResNet "
        f"(conv1/layer1..4). First keys: {list(state)[:6]}")


def extract_encoder(checkpoint: EncoderSource, output: Union[str, Path], strip_prefix: bool = False,
                    overwrite: bool = False, layout: str = "plain") -> Path:
    """Write the encoder of ``checkpoint`` (a network, a file or a state dict) to ``output`` (``.pth``/``.pt`` or
    ``.safetensors``; ``layout="medicalnet"``: ``.pth``/``.pt`` only); returns the path."""
    output = Path(output)
    if layout not in LAYOUTS:
        raise InvalidValueError(f"unknown encoder file layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if output.suffix not in OUTPUT_SUFFIXES or (layout == "medicalnet" and output.suffix == ".safetensors"):
        allowed = OUTPUT_SUFFIXES if layout == "plain" else (".pth", ".pt")
        raise InvalidValueError(f"{output}: the {layout} encoder file must end in one of {', '.join(allowed)}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it or choose another name")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} does not exist; create it first")
    # own, contiguous storage per tensor: safetensors refuses shared or strided tensors
    encoder = {k: v.detach().contiguous().clone()
               for k, v in encoder_state_dict(checkpoint, strip_prefix or layout == "medicalnet").items()}
    check_weight_values(encoder, str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the given weights")
    if layout == "medicalnet":
        name = (str(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint.source
                if isinstance(checkpoint, SourceWeights) else type(checkpoint).__name__
                if isinstance(checkpoint, nn.Module) else "state dict")
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
