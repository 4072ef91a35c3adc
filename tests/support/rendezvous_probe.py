"""Run by torchrun in tests/test_train_ddp.py: joins the process group as nnunet_transfer.train_ddp does and writes
what the process got (rank, world, backend, an all-reduce, the trainer device) to OUTDIR/rank<r>.json."""

import json
import sys
from pathlib import Path

import torch
from torch import distributed as dist

from nnunet_transfer.train_ddp import join_process_group
from nnunet_transfer.trainers.ddp_placement import ddp_device

if __name__ == "__main__":
    joined = join_process_group("cpu")
    total = torch.tensor([float(joined["rank"] + 1)])
    dist.all_reduce(total)
    joined.update(all_reduce=float(total), device=str(ddp_device(torch.device("cpu"))))
    Path(sys.argv[1], f"rank{joined['rank']}.json").write_text(json.dumps(joined))
    dist.destroy_process_group()
