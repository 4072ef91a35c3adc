"""Train-step time of our trainers/networks against nnU-Net's own baseline, measured in one run.

Each comparison instantiates two real nnU-Net trainers on the same preprocessed data, draws ONE batch from nnU-Net's
data pipeline and times ``train_step`` on it, alternating between the two, so machine load hits both alike. The
figure is the ratio of median step times (ours / baseline).

    python benchmarks/bench_train_step.py --quick                    # all comparisons, small data, CPU
    python benchmarks/bench_train_step.py --only mots kits_hec --device cuda --steps 30 --shape 64 128 128

Comparisons:
  mots       MOTSPretrainTrainer (dynamic head, partial-label loss) vs nnUNetTrainer, same MOTS plans
  kits_hec   KiTS21HECTrainer (HEC-weighted loss) vs nnUNetTrainer, same KiTS plans
  aspp       ResUNetASPP vs the plans' PlainConvUNet (same topology, nnUNetTrainer)
  attention  AttentionUNetTrainer (gated skips) vs nnUNetTrainer, same plans
  frozen     FrozenEncoderTrainer (frozen encoder) vs a full step (nnUNetTrainer)
  med3d      Med3DFinetuneTrainer (Med3D ResNet-10 U-Net, plans from plan-arch) vs nnUNetTrainer
  mleam      MLEAMTrainer (MLEAM decoder + edge loss on nnU-Net's encoder) vs nnUNetTrainer
             (med3d/mleam: each trainer draws its own batch from the same data, since patch or deep-supervision
             targets differ)
plus the dynamic head (grouped convolution vs a per-sample loop) and 2D attention U-Net inference FPS at 256x256.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

COMPARISONS = ("mots", "kits_hec", "aspp", "attention", "frozen", "med3d", "mleam")
MOTS_ID, KITS_ID = 998, 997


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn: Callable[[], object], repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Bench:
    def __init__(self, workspace: Path, shape: List[int], device: str, steps: int):
        from nnunet_transfer.workspace import NnUNetWorkspace

        self.ws = NnUNetWorkspace(workspace)
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
            os.environ[var] = self.ws.env[var]
        os.environ["nnUNet_n_proc_DA"] = "0"
        self.shape = [str(s) for s in shape]
        self.steps = steps
        import torch

        self.device = torch.device(device)

    # ------------------------------------------------------------------ data
    def dataset(self, kind: str) -> str:
        name = {"mots": f"Dataset{MOTS_ID}_BenchMOTS", "kits": f"Dataset{KITS_ID}_BenchKiTS"}[kind]
        if not (self.ws.preprocessed / name / "nnUNetPlans.json").is_file():
            src = self.ws.root / f"src_{kind}"
            if kind == "mots":
                self.ws.cli("synth", "mots", src, "--cases", 2, "--shape", *self.shape)
                self.ws.cli("convert", "mots", src, "-d", MOTS_ID, "--name", "BenchMOTS")
                self.ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MOTS_ID, "-c", "3d_fullres", "-np", "2")
            else:
                self.ws.cli("synth", "kits21", src, "--cases", 6, "--shape", *self.shape)
                self.ws.cli("convert", "kits21", src, "-d", KITS_ID, "--name", "BenchKiTS")
                self.ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", KITS_ID, "-c", "3d_fullres", "-np", "2")
        return name

    def aspp_plans(self, dataset: str) -> str:
        """The plain plans with ResUNetASPP on the same topology (same data, patch and batch)."""
        from nnunet_transfer.architectures.res_unet_aspp import PAPER_ENCODER_BLOCKS

        folder = self.ws.preprocessed / dataset
        plans = json.loads((folder / "nnUNetPlans.json").read_text())
        arch = plans["configurations"]["3d_fullres"]["architecture"]
        kwargs = dict(arch["arch_kwargs"])
        n = kwargs["n_stages"]
        kwargs["n_blocks_per_stage"] = list(PAPER_ENCODER_BLOCKS[:n])
        kwargs["n_conv_per_stage_decoder"] = [1] * (n - 1)
        kwargs.pop("n_conv_per_stage")
        arch["network_class_name"] = "nnunet_transfer.architectures.res_unet_aspp.ResUNetASPP"
        arch["arch_kwargs"] = kwargs
        plans["plans_name"] = "nnUNetPlans_benchASPP"
        (folder / "nnUNetPlans_benchASPP.json").write_text(json.dumps(plans, indent=2))
        return "nnUNetPlans_benchASPP"

    # ------------------------------------------------------------------ trainers
    def trainer(self, cls, dataset: str, plans_name: str = "nnUNetPlans"):
        folder = self.ws.preprocessed / dataset
        plans = json.loads((folder / f"{plans_name}.json").read_text())
        plans["continue_training"] = False  # nnU-Net's launcher adds this before constructing a trainer
        dataset_json = json.loads((folder / "dataset.json").read_text())
        trainer = cls(plans, "3d_fullres", 0, dataset_json, self.device)
        trainer.initialize()
        trainer.network.train()
        return trainer

    def compare(self, ours, baseline, shared_batch: bool = True) -> Dict[str, float]:
        batch = next(ours.get_dataloaders()[0])
        base_batch = batch if shared_batch else next(baseline.get_dataloaders()[0])
        for _ in range(2):  # warm-up
            baseline.train_step(copy.copy(base_batch))
            ours.train_step(copy.copy(batch))
        base, mine = [], []
        for _ in range(self.steps):
            base.append(_median_time(lambda: baseline.train_step(copy.copy(base_batch)), 1, self.device))
            mine.append(_median_time(lambda: ours.train_step(copy.copy(batch)), 1, self.device))
        b, m = statistics.median(base), statistics.median(mine)
        return {"patch": list(ours.configuration_manager.patch_size), "batch": ours.batch_size,
                "baseline_ms": 1000 * b, "ours_ms": 1000 * m, "ratio": m / b}

    def run(self, name: str) -> Dict[str, float]:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        from nnunet_transfer.trainers import (AttentionUNetTrainer, FrozenEncoderTrainer, KiTS21HECTrainer,
                                              MOTSPretrainTrainer)

        if name == "mots":
            d = self.dataset("mots")
            return self.compare(self.trainer(MOTSPretrainTrainer, d), self.trainer(nnUNetTrainer, d))
        d = self.dataset("kits")
        if name == "kits_hec":
            return self.compare(self.trainer(KiTS21HECTrainer, d), self.trainer(nnUNetTrainer, d))
        if name == "aspp":
            return self.compare(self.trainer(nnUNetTrainer, d, self.aspp_plans(d)), self.trainer(nnUNetTrainer, d))
        if name == "attention":
            return self.compare(self.trainer(AttentionUNetTrainer, d), self.trainer(nnUNetTrainer, d))
        if name == "frozen":
            return self.compare(self.trainer(FrozenEncoderTrainer, d), self.trainer(nnUNetTrainer, d))
        if name in ("med3d", "mleam"):
            from nnunet_transfer.planning.plan_arch import plan_arch
            from nnunet_transfer.trainers import Med3DFinetuneTrainer, MLEAMTrainer

            arch, decoder, cls = (("med3d-resnet10", None, Med3DFinetuneTrainer) if name == "med3d"
                                  else ("plain", "mleam", MLEAMTrainer))
            plans = plan_arch(KITS_ID, arch, decoder=decoder, preprocess=False).stem
            return self.compare(self.trainer(cls, d, plans), self.trainer(nnUNetTrainer, d), shared_batch=False)
        raise ValueError(name)


def bench_head(device_name: str, batch: int, spatial, repeats: int) -> Dict[str, float]:
    import torch
    import torch.nn.functional as F

    from nnunet_transfer.architectures.dynamic_head import DynamicHead

    device = torch.device(device_name)
    head = DynamicHead().to(device)
    feats = torch.randn(batch, 8, *spatial, device=device)
    params = torch.randn(batch, 1, head.num_params, device=device)

    def loop():  # the per-sample approach of later DoDNet-style models
        weights, biases = head.split_params(params)
        outs = []
        for n in range(batch):
            x = feats[n:n + 1]
            for layer, (w, b) in enumerate(zip(weights, biases)):
                x = F.conv3d(x, w[n, 0][..., None, None, None], b[n, 0])
                x = F.relu(x) if layer < len(weights) - 1 else x
            outs.append(x)
        return torch.cat(outs)

    with torch.no_grad():
        torch.testing.assert_close(head(feats, params)[:, 0], loop(), rtol=1e-4, atol=1e-4)
        g = _median_time(lambda: head(feats, params), repeats, device)
        lp = _median_time(loop, repeats, device)
    return {"grouped_ms": 1000 * g, "loop_ms": 1000 * lp, "speedup": lp / g}


def bench_fps_2d(device_name: str, repeats: int) -> Dict[str, float]:
    """2D inference at 256x256 (RGB, batch 1): nnU-Net-style plain U-Net vs the attention-gated one."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_transfer.architectures.attention_unet import AttentionUNet

    kwargs = dict(input_channels=3, n_stages=7, features_per_stage=[32, 64, 128, 256, 512, 512, 512],
                  conv_op=torch.nn.Conv2d, kernel_sizes=[[3, 3]] * 7, strides=[[1, 1]] + [[2, 2]] * 6,
                  n_conv_per_stage=[2] * 7, num_classes=2, n_conv_per_stage_decoder=[2] * 6, conv_bias=True,
                  norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    device = torch.device(device_name)
    x = torch.randn(1, 3, 256, 256, device=device)
    out = {}
    for name, cls in (("plain", PlainConvUNet), ("attention", AttentionUNet)):
        net = cls(**kwargs).to(device).eval()
        with torch.no_grad():
            net(x)
            out[f"{name}_fps"] = 1.0 / _median_time(lambda: net(x), repeats, device)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and few steps")
    parser.add_argument("--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args(argv)
    shape = args.shape or ([24, 64, 64] if args.quick else [48, 96, 96])
    steps = args.steps or (5 if args.quick else 20)
    bench = Bench(Path(args.workspace or tempfile.mkdtemp(prefix="bench_step_")), shape, args.device, steps)
    print(f"device {args.device}, synthetic volumes {shape}, {steps} alternating steps each")
    print(f"{'comparison':<11}{'patch':>16}{'batch':>6}{'baseline ms':>13}{'ours ms':>10}{'ratio':>8}")
    for name in args.only:
        r = bench.run(name)
        print(f"{name:<11}{str(r['patch']):>16}{r['batch']:>6}{r['baseline_ms']:>13.1f}{r['ours_ms']:>10.1f}"
              f"{r['ratio']:>8.3f}", flush=True)
    head = bench_head(args.device, 2, (24, 64, 64) if args.quick else (64, 128, 128), 5 if args.quick else 20)
    print(f"dynamic head 8->8->8->2 forward: grouped {head['grouped_ms']:.2f} ms, per-sample loop "
          f"{head['loop_ms']:.2f} ms, speed-up {head['speedup']:.2f}x")
    fps = bench_fps_2d(args.device, 3 if args.quick else 10)
    print(f"2D inference 256x256 RGB, batch 1: plain U-Net {fps['plain_fps']:.1f} FPS, attention U-Net "
          f"{fps['attention_fps']:.1f} FPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
