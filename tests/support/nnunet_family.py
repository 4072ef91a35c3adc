"""Writers of checkpoints in the exact formats of the nnU-Net family, from each project's own saving code.

- nnU-Net v1 (MIC-DKFZ/nnUNet, branch nnunetv1): ``NetworkTrainer.save_checkpoint`` (the ``.model`` dict) and
  ``nnUNetTrainer.save_checkpoint`` (the ``.model.pkl`` info written with ``pickle.dump``); the network keys are the
  ones ``Generic_UNet.__init__`` creates for ``nnUNetTrainerV2`` (convolutional pooling and upsampling, no bias on
  ``tu`` and ``seg_outputs``, 320 features at most in 3D).
- nnU-Net v2 (nnunetv2 2.x ``nnUNetTrainer.save_checkpoint``) in a results folder as ``nnUNetv2_export_model_to_zip``
  packs it (paths relative to ``nnUNet_results``).
- nnssl (MIC-DKFZ/nnssl ``AbstractBaseTrainer.save_checkpoint`` with ``AdaptationPlan.serialize()``).

The writers take an optional ``support.booby_trap.Payload`` to plant in the pickled parts.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from support.booby_trap import Payload


def generic_unet_v1_state_dict(input_channels: int, base_features: int, num_classes: int,
                               pool_kernels: Sequence[Sequence[int]], conv_kernels: Sequence[Sequence[int]],
                               num_conv: int = 2, max_features: int = 320, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The state dict nnU-Net v1's ``Generic_UNet`` (as built by ``nnUNetTrainerV2``) has, with random values.

    Follows ``Generic_UNet.__init__``: context stages ``conv_blocks_context.d.blocks.c``; the bottleneck and every
    localisation stage as two stacks (``.0`` with num_conv - 1 convs, ``.1`` with one); ``tu.u`` transposed convs
    (bias=False); ``seg_outputs.u`` 1x1x1 convs (bias=False); each conv followed by ``instnorm`` (affine).
    """
    g = torch.Generator().manual_seed(seed)
    state: Dict[str, torch.Tensor] = OrderedDict()

    def conv_block(prefix: str, cin: int, cout: int, kernel: Sequence[int]) -> None:
        state[f"{prefix}.conv.weight"] = torch.randn(cout, cin, *kernel, generator=g) * 0.1
        state[f"{prefix}.conv.bias"] = torch.randn(cout, generator=g) * 0.1
        state[f"{prefix}.instnorm.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        state[f"{prefix}.instnorm.bias"] = 0.1 * torch.randn(cout, generator=g)

    num_pool = len(pool_kernels)
    output_features, input_features = base_features, input_channels
    context_out: List[int] = []
    for d in range(num_pool):
        for c in range(num_conv):
            conv_block(f"conv_blocks_context.{d}.blocks.{c}", input_features if c == 0 else output_features,
                       output_features, conv_kernels[d])
        context_out.append(output_features)
        input_features = output_features
        output_features = min(int(np.round(output_features * 2)), max_features)
    final = output_features  # convolutional upsampling: the bottleneck keeps its features
    for c in range(num_conv - 1):
        conv_block(f"conv_blocks_context.{num_pool}.0.blocks.{c}", input_features if c == 0 else output_features,
                   output_features, conv_kernels[num_pool])
    conv_block(f"conv_blocks_context.{num_pool}.1.blocks.0", output_features, final, conv_kernels[num_pool])
    for u in range(num_pool):
        down, skip = final, context_out[-(u + 1)]
        state[f"tu.{u}.weight"] = torch.randn(down, skip, *pool_kernels[-(u + 1)], generator=g) * 0.1
        for c in range(num_conv - 1):
            conv_block(f"conv_blocks_localization.{u}.0.blocks.{c}", 2 * skip if c == 0 else skip, skip,
                       conv_kernels[-(u + 1)])
        conv_block(f"conv_blocks_localization.{u}.1.blocks.0", skip, skip, conv_kernels[-(u + 1)])
        final = skip
    for u in range(num_pool):
        state[f"seg_outputs.{u}.weight"] = torch.randn(num_classes, context_out[-(u + 1)], 1, 1, 1, generator=g) * 0.1
    return state


def write_v1_model(folder: Path, state: Dict[str, torch.Tensor], plans: dict, payload: Optional[Payload] = None,
                   pkl_payload: Optional[Payload] = None) -> Path:
    """``model_final_checkpoint.model`` + ``.model.pkl`` exactly as nnU-Net v1 writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    fname = folder / "model_final_checkpoint.model"
    params = [nn.Parameter(v.clone()) for v in state.values()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True)
    with torch.enable_grad():  # a trained optimizer state (momentum buffers), as in a real checkpoint
        sum(p.sum() for p in params).backward()
        optimizer.step()
    save_this = {
        "epoch": 1000,
        "state_dict": state,
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": None,
        "plot_stuff": ([np.float64(0.5), np.float64(0.4)], [np.float64(0.6), np.float64(0.45)], [],
                       [np.float64(0.7), np.float64(0.8)]),
        "best_stuff": (999, np.float64(0.4), np.float64(0.8)),
        "amp_grad_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                            "_growth_tracker": 0},
    }
    if payload is not None:
        save_this["plot_stuff"] = (payload,)
    torch.save(save_this, fname)
    info = OrderedDict()
    info["init"] = (str(folder / "nnUNetPlansv2.1_plans_3D.pkl"), 0, str(folder), str(folder), True, 0, True, True,
                    True)
    info["name"] = "nnUNetTrainerV2"
    info["class"] = "<class 'nnunet.training.network_training.nnUNetTrainerV2.nnUNetTrainerV2'>"
    info["plans"] = plans if pkl_payload is None else {**plans, "x": pkl_payload}
    with open(str(fname) + ".pkl", "wb") as f:
        pickle.dump(info, f)  # batchgenerators' write_pickle
    return fname


def v1_plans(pool_kernels, conv_kernels, patch_size, spacing, base_features=32, num_classes=2) -> dict:
    """The parts of a v1 plans pickle the loader reports (numpy arrays where v1 has them)."""
    return {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: "CT"}, "normalization_schemes": OrderedDict({0: "CT"}),
        "num_classes": num_classes - 1, "all_classes": list(range(1, num_classes)), "base_num_features": base_features,
        "use_mask_for_norm": OrderedDict({0: False}), "keep_only_largest_region": None, "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "data_identifier": "nnUNetData_plans_v2.1", "conv_per_stage": 2,
        "original_spacings": [np.array(spacing)], "list_of_npz_files": {"a", "b"},
        "plans_per_stage": {0: {"batch_size": 2, "num_pool_per_axis": [len(pool_kernels)] * 3,
                                "patch_size": np.array(patch_size), "current_spacing": np.array(spacing),
                                "original_spacing": np.array(spacing), "do_dummy_2D_data_aug": False,
                                "pool_op_kernel_sizes": [list(p) for p in pool_kernels],
                                "conv_kernel_sizes": [list(k) for k in conv_kernels]}},
    }


def write_v2_checkpoint(path: Path, network: nn.Module, payload: Optional[Payload] = None,
                        trainer_name: str = "nnUNetTrainer", extra: Optional[dict] = None,
                        drop: Sequence[str] = ()) -> Path:
    """``checkpoint_final.pth`` as ``nnUNetTrainer.save_checkpoint`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [0.1, 0.2], "ema_fg_dice": [0.1, 0.15], "dice_per_class_or_region": [[0.1]],
                    "train_losses": [0.9, 0.8], "val_losses": [0.95, 0.85], "lrs": [0.01, 0.009],
                    "epoch_start_timestamps": [0.0, 1.0], "epoch_end_timestamps": [1.0, 2.0]},
        "_best_ema": 0.15,
        "current_epoch": 2,
        "init_args": {"plans": {"plans_name": "nnUNetPlans"}, "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": {"labels": {"background": 0, "organ": 1}}, "device": torch.device("cpu")},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": (0, 1, 2),
        **(extra or {}),
    }
    for key in drop:
        checkpoint.pop(key)
    if payload is not None:
        checkpoint["init_args"]["unpack_dataset"] = payload
    torch.save(checkpoint, path)
    return path


def write_results_folder(results: Path, network: nn.Module, plans: dict, folds: Sequence[str] = ("0",),
                         payload: Optional[Payload] = None,
                         model: str = "Dataset777_TotalSeg/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres") -> Path:
    """A v2 results folder (TotalSegmentator style): plans.json, dataset.json, fold_X/checkpoint_final.pth."""
    folder = results / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                                     "spleen": 1}, "numTraining": 10, "file_ending": ".nii.gz"}))
    for fold in folds:
        write_v2_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth", network, payload)
    return folder


def zip_results_folder(results: Path, folder: Path, archive: Path) -> Path:
    """The zip ``nnUNetv2_export_model_to_zip`` writes: member names relative to ``nnUNet_results``."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(results).as_posix())
    return archive


def v2_plans(arch_kwargs: dict, patch_size, spacing) -> dict:
    return {"dataset_name": "Dataset777_TotalSeg", "plans_name": "nnUNetPlans",
            "configurations": {"3d_fullres": {"patch_size": list(patch_size), "spacing": list(spacing),
                                              "architecture": {"network_class_name": "dynamic_network_architectures"
                                                               ".architectures.unet.PlainConvUNet",
                                                               "arch_kwargs": arch_kwargs}}}}


def resenc_unet(features=(8, 16, 24), kernels=None, strides=None, num_classes=1) -> ResidualEncoderUNet:
    n = len(features)
    return ResidualEncoderUNet(1, n, list(features), nn.Conv3d, kernels or [[3, 3, 3]] * n,
                               strides or [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), [1] + [2] * (n - 1), num_classes, 1,
                               True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                               {"inplace": True})


def write_nnssl_checkpoint(path: Path, network: nn.Module, payload: Optional[Payload] = None) -> Path:
    """An nnssl checkpoint: the v2 keys plus ``nnssl_adaptation_plan`` (``AdaptationPlan.serialize()``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arch_kwargs = {"n_stages": 3, "features_per_stage": [8, 16, 24], "conv_op": "torch.nn.modules.conv.Conv3d",
                   "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                   "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                   "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                   "nonlin": "torch.nn.modules.activation.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    plan = {
        "architecture_plans": {"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": arch_kwargs,
                               "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"]},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                          "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
                          "image_reader_writer": "NibabelReaderWriter", "transpose_forward": [0, 1, 2],
                          "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
                          "configurations": {"onemmiso": {"data_identifier": "nnsslPlans_onemmiso",
                                                          "spacing": [1, 1, 1], "patch_size": [160, 160, 160]}}},
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
    }
    return write_v2_checkpoint(path, network, payload, trainer_name="BaseMAETrainer",
                               extra={"nnssl_adaptation_plan": plan}, drop=("inference_allowed_mirroring_axes",))
