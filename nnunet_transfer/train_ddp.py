"""nnU-Net's DDP training of any trainer, one process per GPU, started by torch's own launcher (``torchrun``).

``nnUNetv2_train ... -num_gpus N`` spawns its N processes itself, on one machine, with the NCCL backend and
``localhost`` as rendezvous. To train on several nodes (or on CPUs with gloo), run this module under ``torchrun``
on every node instead::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --master_addr HOST --master_port 29500 \\
        -m nnunet_transfer.train_ddp 600 3d_fullres 0 -tr MOTSPretrainTrainer

The arguments are ``nnUNetv2_train``'s, parsed by the same parser (so our trainers' check of
``-pretrained_weights`` reads this command line like nnU-Net's); ``-num_gpus`` is torchrun's business and refused.
Each process joins the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), with NCCL on CUDA and gloo on the CPU (``-device cpu``), takes GPU
``LOCAL_RANK``, and then runs nnU-Net's own flow of a DDP worker: its trainer lookup (``get_trainer_from_args``),
``maybe_load_checkpoint``, ``run_training`` and ``perform_actual_validation``. Our trainers place their rank on its
node-local device (:mod:`nnunet_transfer.trainers.ddp_placement`). All nodes must see the same ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` (a shared file system): rank 0 writes checkpoints and logs. Docs:
``docs/multi-gpu.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Optional, Sequence, Union

import torch
from torch import distributed as dist

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.trainers.nnunet_invocation import NNUNET_TRAIN_ARGUMENTS

__all__ = ["RENDEZVOUS_VARIABLES", "backend_for", "join_process_group", "build_parser", "train", "main"]

#: what torchrun sets for each process (env:// rendezvous)
RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def backend_for(device_type: str) -> str:
    """torch.distributed backend for a device type: NCCL for CUDA, gloo otherwise."""
    return "nccl" if device_type == "cuda" else "gloo"


def join_process_group(device_type: str, environ: Optional[Dict[str, str]] = None) -> Dict[str, Union[int, str]]:
    """Join the default process group from torchrun's environment; returns rank, world size, local rank and
    backend. On CUDA the process's current GPU becomes ``LOCAL_RANK``."""
    environ = os.environ if environ is None else environ
    missing = [v for v in RENDEZVOUS_VARIABLES if not environ.get(v)]
    if missing:
        raise NnUNetTransferError(
            f"{', '.join(missing)} not set: this entry point runs one DDP process and takes its rank and the "
            "rendezvous from torchrun",
            fix="start it with `torchrun --nproc_per_node N [--nnodes ...] -m nnunet_transfer.train_ddp ...` "
                "(one node: `nnUNetv2_train ... -num_gpus N` does the same)")
    backend = backend_for(device_type)
    local_rank = int(environ["LOCAL_RANK"])
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise NnUNetTransferError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPUs",
                                      fix="set torchrun's --nproc_per_node to at most the number of GPUs per node")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=int(environ["RANK"]),
                            world_size=int(environ["WORLD_SIZE"]))
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "local_rank": local_rank,
            "backend": backend}


def build_parser() -> argparse.ArgumentParser:
    """``nnUNetv2_train``'s arguments (the same table our trainers' guard parses)."""
    parser = argparse.ArgumentParser(
        prog="python -m nnunet_transfer.train_ddp",
        description="nnU-Net training of one DDP process, started by torchrun (arguments as nnUNetv2_train)")
    for flags, kwargs in NNUNET_TRAIN_ARGUMENTS:
        parser.add_argument(*flags, **kwargs)
    return parser


def train(args: argparse.Namespace) -> None:
    """nnU-Net's flow of one DDP worker (``nnunetv2.run.run_training.run_ddp`` after its process-group set-up)."""
    from batchgenerators.utilities.file_and_folder_operations import join
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    from torch.backends import cudnn

    if args.num_gpus != 1:
        raise NnUNetTransferError("-num_gpus does not apply under torchrun: the number of processes is torchrun's",
                                  fix="drop -num_gpus and set torchrun's --nproc_per_node (and --nnodes)")
    if args.c and args.val:
        raise NnUNetTransferError("--c and --val together", fix="give one of them")
    if args.device not in ("cuda", "cpu"):
        raise NnUNetTransferError(f"-device {args.device}: DDP runs on cuda (NCCL) or cpu (gloo)",
                                  fix="use -device cuda or -device cpu")
    fold: Union[int, str] = args.fold if args.fold == "all" else int(args.fold)
    device = torch.device(args.device)
    join_process_group(device.type)
    try:
        trainer = get_trainer_from_args(args.dataset_name_or_id, args.configuration, fold, args.tr, args.p, args.c,
                                        device=device)
        if args.disable_checkpointing:
            trainer.disable_checkpointing = True
        maybe_load_checkpoint(trainer, args.c, args.val, args.pretrained_weights)
        if device.type == "cuda":
            cudnn.deterministic = False
            cudnn.benchmark = True
        if not args.val:
            trainer.run_training()
        if args.val_best:
            trainer.load_checkpoint(join(trainer.output_folder, "checkpoint_best.pth"))
        trainer.perform_actual_validation(args.npz)
    finally:
        dist.destroy_process_group()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        train(args)
    except NnUNetTransferError as e:
        print(f"nnunet_transfer.train_ddp: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
