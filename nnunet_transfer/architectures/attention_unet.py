"""Attention-gated U-Net (2D and 3D) that nnU-Net builds from its plans and that loads gate-free U-Net weights.

What it is
    nnU-Net's plain U-Net (``dynamic_network_architectures`` ``PlainConvUNet``) with an additive attention gate
    (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the Pancreas") on every skip connection. Each
    gate filters the encoder features of one resolution with a coefficient map ``alpha`` in [0, 1] computed from the
    coarser decoder features (the gating signal) before they are concatenated with the up-sampled decoder features.

Why it is built this way
    Transfer learning (Khadka 2020, "Transfer of Knowledge: Fine-tuning for Polyp Segmentation with Attention")
    starts from a U-Net trained *without* gates and adds the gates for fine-tuning. So everything except the gates
    must be the very same modules as ``PlainConvUNet``: :class:`AttentionUNet` subclasses ``PlainConvUNet`` and its
    decoder subclasses DNA's ``UNetDecoder``; the gates live in the new ``decoder.attention_gates`` list. The
    state_dict of an :class:`AttentionUNet` is therefore the ``PlainConvUNet`` state_dict (same names, same shapes)
    plus keys starting with ``decoder.attention_gates.``, and a gate-free checkpoint loads with
    ``load_state_dict(..., strict=False)`` reporting exactly the gate keys as missing.

Gate start (our decision, documented)
    Oktay's segmentation code initialises the gates with Kaiming init only (alpha starts around 0.5 with random
    spatial structure) and its output transform ``W = 1x1 conv + norm`` re-normalises the gated skip. Both are fine
    when training from scratch but destroy what a loaded gate-free decoder expects from its skips: with nnU-Net's
    instance norm, ``W(alpha * x)`` cannot be initialised to the identity at all. Neither the fine-tuning paper nor
    Oktay's code has a fine-tuning-specific init; Oktay's sigmoid grid-attention variant sets the psi bias to 3.0
    so that alpha starts near 1. We therefore default to a *transfer start*:

    * ``gate_residual=True``: output = ``alpha * x + W(alpha * x)``, with the affine parameters of W's norm
      zero-initialised (zero-init residual branch, as DNA does for residual blocks). W still learns a 1x1 conv +
      norm refinement, but starts as a no-op; alpha still multiplies every path, so the gate can suppress regions.
    * psi's weights start at zero and its bias at ``gate_psi_bias`` (3.0, Oktay's value), so alpha starts as the
      constant sigmoid(3.0) = 0.953 everywhere. The network loaded from a gate-free checkpoint then computes the
      gate-free function with every skip scaled by 0.953 (close to, not exactly, the gate-free output; see the
      tests). Gradients reach psi's weights at once and theta/phi from the second step on.

    ``gate_residual=False`` gives the paper's gate exactly (output = ``W(alpha * x)``, Kaiming init of all convs,
    psi bias still ``gate_psi_bias``); use it for training from scratch. Both options are extra keyword arguments
    with defaults, so they can be put into the plans' ``arch_kwargs`` but are not needed there.

Name in an nnU-Net plans file: ``"network_arch_class_name": "nnunet_transfer.architectures.attention_unet.AttentionUNet"``
with the configuration's PlainConvUNet ``arch_kwargs`` unchanged.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    maybe_convert_scalar_to_list,
)
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["AttentionGate", "AttentionGatedUNetDecoder", "AttentionUNet", "GATE_KEY_PREFIX", "gate_state_dict_keys"]

#: state_dict key prefix of all gate parameters in :class:`AttentionUNet`; every other key is PlainConvUNet's.
GATE_KEY_PREFIX = "decoder.attention_gates."

_INTERPOLATION_MODE = {2: "bilinear", 3: "trilinear"}

# nnU-Net's He init (negative slope of its LeakyReLU), reused so gates and U-Net are initialised alike.
_he_init = InitWeights_He(1e-2)


class AttentionGate(nn.Module):
    """Additive attention gate for one skip connection (Oktay et al. 2018), 2D or 3D.

    theta = conv(x) with kernel = stride = ``subsample`` (the stride between the skip and the gating resolution,
    per axis, so a stride of 1 on an axis of anisotropic plans works), no bias; phi = 1x1 conv of the gating signal
    g (with bias), resampled to theta's size when the sizes differ; f = ReLU(theta + phi); alpha = sigmoid(psi(f))
    with psi a 1x1 conv to one channel; alpha is up-sampled (bi/trilinear) to x's size. Output: ``W(alpha * x)``
    (``residual=False``, the paper) or ``alpha * x + W(alpha * x)`` (``residual=True``), W = 1x1 conv + norm.

    The last attention map (detached, shape ``(b, 1, *x.shape[2:])``) is kept in :attr:`last_attention` for
    inspection. See the module docstring for the initialisation choices.
    """

    def __init__(
        self,
        skip_channels: int,
        gating_channels: int,
        inter_channels: Optional[int] = None,
        conv_op: Type[_ConvNd] = nn.Conv3d,
        norm_op: Optional[Type[nn.Module]] = nn.InstanceNorm3d,
        norm_op_kwargs: Optional[dict] = None,
        subsample: Union[int, Sequence[int]] = 2,
        residual: bool = True,
        psi_bias: float = 3.0,
    ) -> None:
        super().__init__()
        dim = convert_conv_op_to_dim(conv_op)
        if dim not in _INTERPOLATION_MODE:
            raise ValueError(
                f"AttentionGate supports 2D and 3D convolutions only, got conv_op={conv_op.__name__}; "
                "use nn.Conv2d or nn.Conv3d."
            )
        if skip_channels < 1 or gating_channels < 1:
            raise ValueError(
                f"AttentionGate needs positive channel counts, got skip_channels={skip_channels}, "
                f"gating_channels={gating_channels}."
            )
        if inter_channels is None:
            inter_channels = max(skip_channels // 2, 1)
        subsample = tuple(int(s) for s in maybe_convert_scalar_to_list(conv_op, subsample))
        if len(subsample) != dim or any(s < 1 for s in subsample):
            raise ValueError(
                f"AttentionGate subsample must be a positive int or {dim} positive ints for {conv_op.__name__}, "
                f"got {subsample}."
            )
        self.subsample = subsample
        self.residual = residual
        self.psi_bias = float(psi_bias)
        self._interpolation_mode = _INTERPOLATION_MODE[dim]

        self.theta = conv_op(skip_channels, inter_channels, kernel_size=subsample, stride=subsample, padding=0,
                             bias=False)
        self.phi = conv_op(gating_channels, inter_channels, kernel_size=1, stride=1, padding=0, bias=True)
        self.psi = conv_op(inter_channels, 1, kernel_size=1, stride=1, padding=0, bias=True)
        # A bias before a norm is cancelled by it, so W's conv only gets one without a norm.
        w_modules: List[nn.Module] = [conv_op(skip_channels, skip_channels, kernel_size=1, stride=1, padding=0,
                                              bias=norm_op is None)]
        if norm_op is not None:
            w_modules.append(norm_op(skip_channels, **(norm_op_kwargs or {})))
        self.W = nn.Sequential(*w_modules)

        self.last_attention: Optional[torch.Tensor] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)initialise the gate: He init of all convs, psi bias = ``psi_bias``; when ``residual``, psi's weights
        and W's output (norm affine, else conv) start at zero so the gate starts as ``sigmoid(psi_bias) * x``."""
        for module in (self.theta, self.phi, self.psi, self.W[0]):
            _he_init(module)
        nn.init.constant_(self.psi.bias, self.psi_bias)
        w_out = self.W[-1]
        if self.residual:
            nn.init.zeros_(self.psi.weight)
            if len(self.W) > 1 and getattr(w_out, "weight", None) is None:
                raise ValueError(
                    f"AttentionGate(residual=True) zero-initialises W's norm, but {type(w_out).__name__} has no "
                    "affine weight; pass norm_op_kwargs with affine=True or use residual=False."
                )
            nn.init.zeros_(w_out.weight)
            if w_out.bias is not None:
                nn.init.zeros_(w_out.bias)
        elif len(self.W) > 1 and getattr(w_out, "weight", None) is not None:
            nn.init.ones_(w_out.weight)
            nn.init.zeros_(w_out.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gate skip features ``x`` (b, C_skip, *S) with the coarser gating signal ``g`` (b, C_gate, *S')."""
        theta = self.theta(x)
        phi = self.phi(g)
        if phi.shape[2:] != theta.shape[2:]:
            phi = F.interpolate(phi, size=theta.shape[2:], mode=self._interpolation_mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        if alpha.shape[2:] != x.shape[2:]:
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=self._interpolation_mode, align_corners=False)
        self.last_attention = alpha.detach()
        gated = alpha * x
        transformed = self.W(gated)
        return gated + transformed if self.residual else transformed

    def extra_repr(self) -> str:
        return f"subsample={self.subsample}, residual={self.residual}, psi_bias={self.psi_bias}"


class AttentionGatedUNetDecoder(UNetDecoder):
    """DNA's ``UNetDecoder`` with an :class:`AttentionGate` on every skip.

    The inherited modules (``transpconvs``, ``stages``, ``seg_layers``) are untouched, so their state_dict keys are
    those of ``UNetDecoder``; the gates are in ``attention_gates``, in decoder order (lowest resolution first, gate
    ``s`` belongs to ``stages[s]``). Gate ``s`` filters skip ``skips[-(s + 2)]`` using the features coming from below
    (the bottleneck for ``s == 0``) as gating signal, like Oktay's decoder. Outputs are exactly as ``UNetDecoder``'s.
    """

    def __init__(
        self,
        encoder: PlainConvEncoder,
        num_classes: int,
        n_conv_per_stage: Union[int, Tuple[int, ...], List[int]],
        deep_supervision: bool,
        nonlin_first: bool = False,
        gate_residual: bool = True,
        gate_psi_bias: float = 3.0,
    ) -> None:
        super().__init__(encoder, num_classes, n_conv_per_stage, deep_supervision, nonlin_first=nonlin_first)
        channels = encoder.output_channels
        gates = []
        for s in range(1, len(channels)):
            gates.append(AttentionGate(
                skip_channels=channels[-(s + 1)],
                gating_channels=channels[-s],
                conv_op=encoder.conv_op,
                norm_op=encoder.norm_op,
                norm_op_kwargs=encoder.norm_op_kwargs,
                subsample=encoder.strides[-s],
                residual=gate_residual,
                psi_bias=gate_psi_bias,
            ))
        self.attention_gates = nn.ModuleList(gates)

    def forward(self, skips: Sequence[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Decode encoder skips (bottleneck last); returns the full-resolution logits, or with deep supervision the
        list of logits of all decoder stages, highest resolution first (as ``UNetDecoder``)."""
        below = skips[-1]
        seg_outputs = []
        last = len(self.stages) - 1
        for s, (transpconv, stage, gate) in enumerate(zip(self.transpconvs, self.stages, self.attention_gates)):
            gated_skip = gate(skips[-(s + 2)], below)
            below = stage(torch.cat((transpconv(below), gated_skip), 1))
            if self.deep_supervision:
                seg_outputs.append(self.seg_layers[s](below))
            elif s == last:
                seg_outputs.append(self.seg_layers[-1](below))
        seg_outputs = seg_outputs[::-1]
        return seg_outputs if self.deep_supervision else seg_outputs[0]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map voxels of the decoder (DNA's estimate) plus those of the gates; used by nnU-Net's VRAM
        estimate. ``input_size`` is the encoder's input size without batch and channel axes."""
        total = super().compute_conv_feature_map_size(input_size)
        sizes = [list(input_size)]
        for stride in self.encoder.strides:
            sizes.append([i // j for i, j in zip(sizes[-1], stride)])
        # sizes[k + 1] is stage k's resolution; gate s works at skip stage n - 2 - s and the stage below it.
        n_stages = len(self.encoder.output_channels)
        for s, gate in enumerate(self.attention_gates):
            skip_stage = n_stages - 2 - s
            skip_voxels = int(np.prod(sizes[skip_stage + 1], dtype=np.int64))
            coarse_voxels = int(np.prod(sizes[skip_stage + 2], dtype=np.int64))
            inter = gate.theta.out_channels
            skip_channels = gate.theta.in_channels
            # theta, phi, f (inter channels, coarse), psi (coarse), alpha (full), alpha*x, W conv, W norm (full)
            total += 3 * inter * coarse_voxels + coarse_voxels + skip_voxels + 3 * skip_channels * skip_voxels
        return np.int64(total)


class AttentionUNet(PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` with an additive attention gate on every skip (2D or 3D).

    Constructed by nnU-Net exactly like ``PlainConvUNet``:
    ``AttentionUNet(input_channels=..., num_classes=..., **plans_arch_kwargs, deep_supervision=...)``.
    ``gate_residual`` and ``gate_psi_bias`` (see the module docstring) are optional extras.

    All state_dict keys except those starting with :data:`GATE_KEY_PREFIX` equal ``PlainConvUNet``'s for the same
    arguments (names and shapes); ``encoder``, ``decoder``, ``decoder.deep_supervision`` and ``decoder.seg_layers``
    are as in DNA, so nnU-Net's deep-supervision switch works unchanged.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: Union[int, List[int], Tuple[int, ...]],
        conv_op: Type[_ConvNd],
        kernel_sizes: Union[int, List[int], Tuple[int, ...]],
        strides: Union[int, List[int], Tuple[int, ...]],
        n_conv_per_stage: Union[int, List[int], Tuple[int, ...]],
        num_classes: int,
        n_conv_per_stage_decoder: Union[int, Tuple[int, ...], List[int]],
        conv_bias: bool = False,
        norm_op: Union[None, Type[nn.Module]] = None,
        norm_op_kwargs: Optional[dict] = None,
        dropout_op: Union[None, Type[_DropoutNd]] = None,
        dropout_op_kwargs: Optional[dict] = None,
        nonlin: Union[None, Type[nn.Module]] = None,
        nonlin_kwargs: Optional[dict] = None,
        deep_supervision: bool = False,
        nonlin_first: bool = False,
        gate_residual: bool = True,
        gate_psi_bias: float = 3.0,
    ) -> None:
        if convert_conv_op_to_dim(conv_op) not in _INTERPOLATION_MODE:
            raise ValueError(
                f"AttentionUNet supports 2D and 3D plans only, got conv_op={conv_op.__name__}; "
                "check 'conv_op' in the plans' arch_kwargs."
            )
        super().__init__(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_conv_per_stage,
            num_classes, n_conv_per_stage_decoder, conv_bias, norm_op, norm_op_kwargs, dropout_op,
            dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision, nonlin_first,
        )
        # Replace the plain decoder by the gated one; it reuses the same encoder and creates identical modules
        # (same attribute position, same names), so only 'decoder.attention_gates.*' keys are added.
        self.decoder = AttentionGatedUNetDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, nonlin_first=nonlin_first,
            gate_residual=gate_residual, gate_psi_bias=gate_psi_bias,
        )

    def attention_maps(self) -> List[torch.Tensor]:
        """The attention coefficients of the last forward pass, one ``(b, 1, *skip_size)`` tensor per skip with
        values in [0, 1], highest resolution first (same order as deep-supervision outputs)."""
        maps = []
        for index, gate in enumerate(self.decoder.attention_gates):
            if gate.last_attention is None:
                raise RuntimeError(
                    f"AttentionUNet.attention_maps(): gate {index} has no attention map yet; run a forward pass "
                    "through the network first."
                )
            maps.append(gate.last_attention)
        return maps[::-1]

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ``network.apply(network.initialize)`` hook: He init like PlainConvUNet, then each gate's own
        start (``apply`` visits a gate after its convs, so the gate's reset wins)."""
        _he_init(module)
        if isinstance(module, AttentionGate):
            module.reset_parameters()


def gate_state_dict_keys(network: nn.Module) -> List[str]:
    """Names of the attention-gate entries in ``network.state_dict()`` (those new relative to PlainConvUNet)."""
    return [k for k in network.state_dict() if k.startswith(GATE_KEY_PREFIX)]
