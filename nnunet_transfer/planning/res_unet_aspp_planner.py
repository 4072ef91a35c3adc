"""nnU-Net experiment planner for :class:`~nnunet_transfer.architectures.res_unet_aspp.ResUNetASPP`.

It is nnU-Net's residual-encoder planner (``ResEncUNetPlanner``: same target spacing, topology search, patch and
batch size search) with our network named in the plans, the KiTS21 transfer paper's block counts, the ASPP rates,
and a memory estimate for our network. The plans it writes are ordinary nnU-Net plans
(``nnUNetResUNetASPPPlans.json`` by default) that ``nnUNetv2_preprocess -plans_name`` and
``nnUNetv2_train -p`` use unchanged; nnU-Net imports the network from the dotted class path in the plans.

Memory estimate. nnU-Net sizes patches by comparing ``compute_conv_feature_map_size`` (elements of all conv
outputs for one sample) with a reference value that stands for ``gpu_memory_target_in_gb`` at batch size 2.
We compute that count analytically from the arch kwargs (:class:`ResUNetASPPTopology`, the same object the
network is built from), so the patch search does not instantiate a 100M-parameter network per step.
Our reference value is ResEnc's (680e6 for 8 GB) scaled by the activation memory per counted element measured
for both networks (bytes saved for backward, CPU, fp32, 6-stage 32..320-feature 3D topology, 128^3 patch):
ResidualEncoderUNet (nnU-Net ResEnc M layout) 8.58 bytes per counted element, ResUNetASPP 7.96, so
680e6 * 8.58 / 7.96 ~= 730e6. The 2D value gets the same ratio (not measured separately).
"""

from __future__ import annotations

import pydoc
from typing import List, Tuple, Union

import numpy as np
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    ResEncUNetPlanner,
)

from nnunet_transfer.architectures.res_unet_aspp import (
    DEFAULT_ASPP_RATES,
    PAPER_DECODER_BLOCKS,
    PAPER_ENCODER_BLOCKS,
    ResUNetASPP,
    ResUNetASPPTopology,
)
from nnunet_transfer.errors import InvalidValueError

#: The paper's encoder has exactly four downsampling stages (5 resolution levels): what the paper-topology
#: planner keeps of the topology nnU-Net's search gives.
PAPER_NUM_STAGES = 5

RESUNET_ASPP_CLASS_PATH = f"{ResUNetASPP.__module__}.{ResUNetASPP.__name__}"


class ResUNetASPPPlanner(ResEncUNetPlanner):
    """Plans ``ResUNetASPP`` (residual U-Net + ASPP, KiTS21 transfer paper) the way nnU-Net plans its ResEnc U-Net.

    Differences to ``ResEncUNetPlanner``: network class and block counts (:data:`PAPER_ENCODER_BLOCKS`),
    ``aspp_rates`` in the arch kwargs, an analytic memory estimate, reference values calibrated for this network,
    and its own preprocessed-data identifiers (``<plans_name>_<configuration>``) rather than ResEnc's shared
    ``nnUNetPlans_<configuration>``: plans moved between datasets for transfer keep their identifier, and sharing
    the default name could silently mix data preprocessed at different spacings.
    """

    #: ASPP dilation rates written into the plans (a subclass may change them; the memory estimate during the
    #: patch search assumes the default rates, which changes it by well under 1 %: the ASPP runs at the bottleneck)
    aspp_rates: Tuple[int, ...] = DEFAULT_ASPP_RATES
    #: keep only the paper's four downsampling stages (:class:`ResUNetASPPPaperPlanner`)
    paper_topology: bool = False

    def __init__(self, dataset_name_or_id: Union[str, int],
                 gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = 'DefaultPreprocessor',
                 plans_name: str = 'nnUNetResUNetASPPPlans',
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...], None] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.UNet_class = ResUNetASPP
        self.UNet_reference_val_3d = 730_000_000
        self.UNet_reference_val_2d = 145_000_000
        self.UNet_reference_val_corresp_GB = 8
        self.UNet_blocks_per_stage_encoder = PAPER_ENCODER_BLOCKS
        self.UNet_blocks_per_stage_decoder = PAPER_DECODER_BLOCKS

    def generate_data_identifier(self, configuration_name: str) -> str:
        """``<plans_name>_<configuration>`` (nnU-Net's default; see the class docstring for why not ResEnc's)."""
        return self.plans_identifier + '_' + configuration_name

    @staticmethod
    def static_estimate_VRAM_usage(patch_size: Tuple[int, ...], input_channels: int, output_channels: int,
                                   arch_class_name: str, arch_kwargs: dict,
                                   arch_kwargs_req_import: Tuple[str, ...]) -> int:
        """nnU-Net's memory proxy (conv feature map elements per sample), computed without building the network.

        Falls back to nnU-Net's estimate (which instantiates the network) for any other architecture.
        """
        if arch_class_name != RESUNET_ASPP_CLASS_PATH:
            return ResEncUNetPlanner.static_estimate_VRAM_usage(patch_size, input_channels, output_channels,
                                                                arch_class_name, arch_kwargs, arch_kwargs_req_import)
        return estimate_conv_feature_map_elements(patch_size, output_channels, arch_kwargs)

    def get_plans_for_configuration(self, spacing: Union[np.ndarray, Tuple[float, ...], List[float]],
                                    median_shape: Union[np.ndarray, Tuple[int, ...]], data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        """ResEnc's plan for this configuration with ``aspp_rates`` added to the arch kwargs."""
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        plan['architecture']['arch_kwargs']['aspp_rates'] = list(self.aspp_rates)
        if self.paper_topology:
            plan['architecture']['arch_kwargs'] = paper_topology(plan['architecture']['arch_kwargs'])
        return plan


class ResUNetASPPPaperPlanner(ResUNetASPPPlanner):
    """:class:`ResUNetASPPPlanner` with the paper's topology: four downsampling stages (blocks 1, 3, 4, 6, 3).

    nnU-Net's topology search gives as many stages as the patch allows (usually 6 in 3D, i.e. 5 downsamplings);
    this planner keeps the first :data:`PAPER_NUM_STAGES` of them. The patch and batch size come from the search
    for the deeper network (the dropped stages are the smallest, so the memory estimate only shrinks).
    """

    paper_topology = True

    def __init__(self, dataset_name_or_id: Union[str, int],
                 gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = 'DefaultPreprocessor',
                 plans_name: str = 'nnUNetResUNetASPPPaperPlans',
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...], None] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)


def paper_topology(arch_kwargs: dict, num_stages: int = PAPER_NUM_STAGES) -> dict:
    """Plans arch kwargs cut to the first ``num_stages`` resolution levels (per-stage lists shortened)."""
    kw = dict(arch_kwargs)
    n = min(int(kw['n_stages']), num_stages)
    kw['n_stages'] = n
    for key in ('features_per_stage', 'kernel_sizes', 'strides', 'n_blocks_per_stage'):
        if isinstance(kw.get(key), (list, tuple)):
            kw[key] = list(kw[key])[:n]
    if isinstance(kw.get('n_conv_per_stage_decoder'), (list, tuple)):
        kw['n_conv_per_stage_decoder'] = list(kw['n_conv_per_stage_decoder'])[:n - 1]
    return kw


def estimate_conv_feature_map_elements(patch_size: Tuple[int, ...], num_classes: int, arch_kwargs: dict) -> int:
    """Conv feature-map elements of one ``ResUNetASPP`` sample for plans-style ``arch_kwargs`` (ops may be strings).

    Equals ``ResUNetASPP(**arch_kwargs, ...).compute_conv_feature_map_size(patch_size)`` without deep supervision
    (the setting nnU-Net's reference values were calibrated with).
    """
    conv_op = arch_kwargs['conv_op']
    if isinstance(conv_op, str):
        located = pydoc.locate(conv_op)
        if located is None:
            raise InvalidValueError(f"arch_kwargs['conv_op']={conv_op!r} cannot be imported (expected e.g. "
                                    f"'torch.nn.modules.conv.Conv3d').")
        conv_op = located
    topology = ResUNetASPPTopology.from_arch_kwargs(
        convert_conv_op_to_dim(conv_op), arch_kwargs['n_stages'], arch_kwargs['features_per_stage'],
        arch_kwargs['kernel_sizes'], arch_kwargs['strides'], arch_kwargs['n_blocks_per_stage'],
        arch_kwargs['n_conv_per_stage_decoder'], arch_kwargs.get('aspp_rates', DEFAULT_ASPP_RATES))
    return topology.conv_feature_map_elements(patch_size, num_classes, deep_supervision=False)
