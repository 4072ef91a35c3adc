"""Edge-target computation: torch (Haar conv, batched, on the tensor's device) vs. the pywavelets reference.

Both compute the MLEAM edge targets of a batch of label maps (max over foreground classes of the stationary-Haar
edge map, see nnunet_transfer.losses.edge_targets); the outputs are asserted equal before timing is reported.

    python benchmarks/bench_edge_targets.py --quick        # 2x1x32x80x80, 3 labels
    python benchmarks/bench_edge_targets.py                # 2x1x64x160x160, 3 labels
    python benchmarks/bench_edge_targets.py --device cuda  # torch side on the GPU (synchronised timing)

``--mleam-step-share``: the edge targets' share of a whole MLEAM training step, in one run. ``MLEAMTrainer`` is
built by nnU-Net from ``plan-arch ... --decoder mleam`` plans of a synthetic KiTS21 dataset (the data preparation
of :mod:`bench_train_step`), so the patch, batch and deep-supervision targets are the trainer's own. One batch of
its data loader is drawn; ``edge_targets_for_deep_supervision`` on that batch's targets of the network's edge levels
(what ``MLEAMLoss`` computes inside every step) alternates with ``train_step`` on the same batch (forward, loss
with the edge targets, backward, optimiser step). The figure is the ratio of median times; the goal is < 2%.

    python benchmarks/bench_edge_targets.py --mleam-step-share --shape 48 128 128 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nnunet_transfer.losses.edge_targets import edge_map_reference, edge_targets_for_deep_supervision


def _toy_label_map(shape: tuple[int, ...], n_labels: int, seed: int) -> np.ndarray:
    """Nested ellipsoids (labels 1..n_labels) with a random centre: realistic smooth organ-like boundaries."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    centre = rng.uniform(-0.2, 0.2, size=len(shape))
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    seg = np.zeros(shape, dtype=np.int16)
    for label in range(1, n_labels + 1):
        seg[r < 0.8 * (1 - (label - 1) / (n_labels + 1))] = label
    return seg


def reference_edges(seg: np.ndarray) -> np.ndarray:
    """pywavelets path: per sample, per foreground label, max over labels. seg: (B, 1, *spatial)."""
    out = np.zeros(seg.shape, dtype=np.float64)
    for b in range(seg.shape[0]):
        labels = [v for v in np.unique(seg[b, 0]) if v != 0]
        maps = [edge_map_reference(seg[b, 0] == v) for v in labels]
        if maps:
            out[b, 0] = np.maximum.reduce(maps)
    return out


def _time(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def mleam_step_share(shape: list[int], device_name: str, repeats: int, workspace: str | None) -> None:
    """Edge targets vs a whole ``MLEAMTrainer.train_step`` on the same batch, alternated (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train_step import KITS_ID, Bench, _median_time

    from nnunet_transfer.planning.plan_arch import plan_arch
    from nnunet_transfer.trainers import MLEAMTrainer
    from nnunet_transfer.utils.modules import unwrap_network

    bench = Bench(Path(workspace or tempfile.mkdtemp(prefix="bench_edge_share_")), shape, device_name, repeats)
    dataset = bench.dataset("kits")
    plans = plan_arch(KITS_ID, "plain", decoder="mleam", preprocess=False).stem
    trainer = bench.trainer(MLEAMTrainer, dataset, plans)
    batch = next(trainer.get_dataloaders()[0])
    trainer.train_step(copy.copy(batch))  # warm-up; also tells how many edge levels the network has
    levels = len(unwrap_network(trainer.network).last_edge_logits)
    targets = [t.to(bench.device) for t in batch["target"][:levels]]
    ignore_label = trainer.label_manager.ignore_label

    def edges():
        return edge_targets_for_deep_supervision(targets, ignore_label=ignore_label)

    edges()
    t_edges, t_step = [], []
    for _ in range(repeats):
        t_edges.append(_median_time(edges, 1, bench.device))
        t_step.append(_median_time(lambda: trainer.train_step(copy.copy(batch)), 1, bench.device))
    e, st = statistics.median(t_edges), statistics.median(t_step)
    patch = list(trainer.configuration_manager.patch_size)
    print(f"MLEAMTrainer ({type(unwrap_network(trainer.network)).__name__}, plans {plans}): patch "
          f"{'x'.join(map(str, patch))}, batch {trainer.batch_size}, {levels} edge levels "
          f"({', '.join('x'.join(map(str, t.shape[2:])) for t in targets)}), device {device_name}, torch threads "
          f"{torch.get_num_threads()}, median of {repeats} alternating repeats")
    print(f"{'part':<52}{'time [ms]':>12}")
    print(f"{'edge_targets_for_deep_supervision (edge levels)':<52}{e * 1e3:>12.1f}")
    print(f"{'MLEAM train_step (forward, loss, backward, SGD step)':<52}{st * 1e3:>12.1f}")
    print(f"edge targets' share of a training step: {100 * e / st:.2f}% (goal < 2%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller volume (2x1x32x80x80)")
    parser.add_argument("--device", default="cpu", help="device for the torch path (cpu, cuda)")
    parser.add_argument("--labels", type=int, default=3, help="number of foreground labels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--mleam-step-share", action="store_true",
                        help="time the edge targets against a whole MLEAM training step instead (see above)")
    parser.add_argument("--shape", type=int, nargs=3, default=[40, 112, 112],
                        help="--mleam-step-share: synthetic KiTS21 volume z y x; nnU-Net plans the patch from it")
    parser.add_argument("--workspace", default=None, help="--mleam-step-share: reuse a workspace (keeps the data)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mleam_step_share:
        mleam_step_share(args.shape, args.device, args.repeats, args.workspace)
        return

    shape = (32, 80, 80) if args.quick else (64, 160, 160)
    seg_np = np.stack([_toy_label_map(shape, args.labels, seed)[None] for seed in range(2)])
    device = torch.device(args.device)
    seg_t = torch.from_numpy(seg_np).to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    ref = reference_edges(seg_np)
    got = edge_targets_for_deep_supervision([seg_t])[0].cpu().numpy()
    max_err = float(np.abs(got - ref).max())
    assert max_err < 1e-5, f"torch and pywavelets edge targets differ by {max_err}"

    t_ref = _time(lambda: reference_edges(seg_np), args.repeats, lambda: None)
    t_torch = _time(lambda: edge_targets_for_deep_supervision([seg_t]), args.repeats, sync)
    volume = "x".join(str(s) for s in seg_np.shape)
    print(f"edge targets, label map {volume}, {args.labels} labels, best of {args.repeats}; max |diff| {max_err:.1e}")
    print(f"{'implementation':<28}{'time [ms]':>12}{'speed-up':>10}")
    print(f"{'pywavelets (numpy, cpu)':<28}{t_ref * 1e3:>12.1f}{1.0:>10.1f}")
    print(f"{'torch conv (' + device.type + ')':<28}{t_torch * 1e3:>12.1f}{t_ref / t_torch:>10.1f}")


if __name__ == "__main__":
    main()
