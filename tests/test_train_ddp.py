"""The torchrun entry point: rendezvous from torchrun's environment, backend by device, nnU-Net's arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.train_ddp import backend_for, build_parser, join_process_group, train
from nnunet_transfer.trainers.nnunet_invocation import parse_nnunet_train_argv

PROBE = Path(__file__).parent / "support" / "rendezvous_probe.py"


@pytest.mark.slow
def test_two_processes_under_torchrun_join_one_gloo_group(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(PROBE), str(tmp_path)], check=True, env=env, timeout=180)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, joined in enumerate(ranks):
        assert joined == {"rank": rank, "world_size": 2, "local_rank": rank, "backend": "gloo",
                          "all_reduce": 3.0, "device": "cpu"}


def test_without_torchrun_the_error_says_how_to_start_it():
    with pytest.raises(NnUNetTransferError, match="torchrun --nproc_per_node"):
        join_process_group("cpu", environ={"RANK": "0"})


def test_backend_by_device():
    assert backend_for("cuda") == "nccl" and backend_for("cpu") == "gloo"


def test_arguments_are_nnunets_and_num_gpus_is_refused():
    argv = ["600", "3d_fullres", "0", "-tr", "MOTSPretrainTrainer", "-pretrained_weights", "w.pth", "-device", "cpu"]
    ours = build_parser().parse_args(argv)
    assert vars(ours) == vars(parse_nnunet_train_argv(["train_ddp"] + argv))  # what our trainers' guard reads
    with pytest.raises(NnUNetTransferError, match="-num_gpus"):
        train(build_parser().parse_args(argv + ["-num_gpus", "2"]))
