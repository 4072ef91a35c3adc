"""Benchmark: MOTS pretraining train step vs nnU-Net's own trainer, and the grouped dynamic head vs a sample loop.

Both trainers are instantiated on the same plans and preprocessed dataset and run ``train_step`` on the very same
batch, alternating, in one process; the reported figure is the ratio of median step times (MOTS / nnU-Net).

    python benchmarks/bench_mots.py --quick                 # synthetic dataset made on the fly, CPU
    python benchmarks/bench_mots.py --device cuda --steps 50 --shape 64 128 128

The workspace is a temporary folder (or --workspace). Needs nothing but the package.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _prepare(workspace: Path, shape, cases: int) -> None:
    from nnunet_transfer.workspace import NnUNetWorkspace

    ws = NnUNetWorkspace(workspace)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        os.environ[var] = ws.env[var]
    if not (ws.preprocessed / "Dataset998_BenchMOTS" / "nnUNetPlans.json").is_file():
        ws.cli("synth", "mots", ws.root / "src", "--cases", cases, "--shape", *map(str, shape))
        ws.cli("convert", "mots", ws.root / "src", "-d", 998, "--name", "BenchMOTS")
        ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", 998, "-c", "3d_fullres", "-np", "2")


def _trainer(cls, device):
    import json

    from nnunetv2.paths import nnUNet_preprocessed

    folder = Path(nnUNet_preprocessed) / "Dataset998_BenchMOTS"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = cls(plans, "3d_fullres", 0, dataset_json, device)
    trainer.initialize()
    return trainer


def _time_steps(trainer, batch, steps: int, device) -> list:
    import torch

    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def bench_train_step(steps: int, device_name: str) -> dict:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_transfer.trainers import MOTSPretrainTrainer

    device = torch.device(device_name)
    os.environ["nnUNet_n_proc_DA"] = "0"
    baseline = _trainer(nnUNetTrainer, device)
    mots = _trainer(MOTSPretrainTrainer, device)
    # one real batch from nnU-Net's own data pipeline, shared by both trainers
    loader, _ = mots.get_dataloaders()
    batch = next(loader)
    for t in (baseline, mots):  # warm-up
        t.network.train()
        _time_steps(t, batch, 2, device)
    base_times, mots_times = [], []
    for _ in range(steps):  # alternate so that machine load hits both alike
        base_times += _time_steps(baseline, batch, 1, device)
        mots_times += _time_steps(mots, batch, 1, device)
    b, m = statistics.median(base_times), statistics.median(mots_times)
    return {"patch": list(mots.configuration_manager.patch_size), "batch": mots.batch_size,
            "nnUNetTrainer_s": b, "MOTSPretrainTrainer_s": m, "ratio": m / b}


def bench_head(repeats: int, device_name: str, batch: int, spatial) -> dict:
    import torch
    import torch.nn.functional as F

    from nnunet_transfer.architectures.dynamic_head import DynamicHead

    device = torch.device(device_name)
    head = DynamicHead().to(device)
    feats = torch.randn(batch, 8, *spatial, device=device)
    params = torch.randn(batch, 1, head.num_params, device=device)

    def per_sample_loop():
        weights, biases = head.split_params(params)
        outs = []
        for n in range(batch):
            x = feats[n:n + 1]
            for layer, (w, b) in enumerate(zip(weights, biases)):
                x = F.conv3d(x, w[n, 0][..., None, None, None], b[n, 0])
                if layer < len(weights) - 1:
                    x = F.relu(x)
            outs.append(x)
        return torch.cat(outs)

    def grouped():
        return head(feats, params)[:, 0]

    torch.testing.assert_close(grouped(), per_sample_loop(), rtol=1e-4, atol=1e-4)
    result = {}
    for name, fn in (("grouped", grouped), ("loop", per_sample_loop)):
        fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        result[name] = statistics.median(times)
    result["speedup"] = result["loop"] / result["grouped"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data, few steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args(argv)
    shape = args.shape or ([24, 64, 64] if args.quick else [48, 96, 96])
    steps = args.steps or (6 if args.quick else 20)
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="bench_mots_"))
    _prepare(workspace, shape, cases=2)
    step = bench_train_step(steps, args.device)
    head = bench_head(5 if args.quick else 20, args.device, batch=2 if args.quick else 4,
                      spatial=(24, 64, 64) if args.quick else (64, 128, 128))
    print(f"train step, patch {step['patch']}, batch {step['batch']}, device {args.device}, {steps} steps each")
    print(f"  nnUNetTrainer        {step['nnUNetTrainer_s'] * 1000:8.1f} ms")
    print(f"  MOTSPretrainTrainer  {step['MOTSPretrainTrainer_s'] * 1000:8.1f} ms   ratio {step['ratio']:.3f}")
    print("dynamic head (8 -> 8 -> 8 -> 2), forward")
    print(f"  grouped conv {head['grouped'] * 1000:8.2f} ms   per-sample loop {head['loop'] * 1000:8.2f} ms   "
          f"speed-up {head['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
