"""Time of transferring a full-size nnU-Net checkpoint into a network of the same or of other plans.

The source is nnU-Net's default 3d_fullres U-Net (6 stages, 32..320 features, ~31 M parameters) saved like
``checkpoint_final.pth`` (``{"network_weights": ...}``). Targets:

- ``same plans``: the same network (everything loads as is);
- ``other plans``: 5 stages, first kernel (1,3,3), strides (1,2,2) at the first pooling, feature cap 256,
  2 input channels: stage matching plus every adaptation rule.

The time covers what a fine-tuning run pays: reading the file safely (``weights_only``), matching, adapting and
loading, and building the report.

    python benchmarks/bench_transfer.py            # 3 repeats, median
    python benchmarks/bench_transfer.py --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.transfer.weights import transfer_weights


def nnunet_unet(features, kernels, strides, in_channels=1, num_classes=3) -> PlainConvUNet:
    """The network nnU-Net builds from a 3d_fullres plan (InstanceNorm, LeakyReLU, deep supervision)."""
    return PlainConvUNet(in_channels, len(features), list(features), nn.Conv3d, kernels, strides, 2, num_classes, 2,
                         True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                         {"inplace": True}, deep_supervision=True)


def targets() -> dict:
    return {
        "same plans": lambda: nnunet_unet([32, 64, 128, 256, 320, 320], [[3, 3, 3]] * 6,
                                          [[1, 1, 1]] + [[2, 2, 2]] * 5),
        "other plans": lambda: nnunet_unet([32, 64, 128, 256, 256], [[1, 3, 3]] + [[3, 3, 3]] * 4,
                                           [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], in_channels=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = nnunet_unet([32, 64, 128, 256, 320, 320], [[3, 3, 3]] * 6, [[1, 1, 1]] + [[2, 2, 2]] * 5)
    n_params = sum(p.numel() for p in source.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint_final.pth"
        torch.save({"network_weights": source.state_dict(), "trainer_name": "nnUNetTrainer"}, path)
        size_mb = path.stat().st_size / 1e6
        print(f"source: {n_params / 1e6:.1f} M parameters, checkpoint {size_mb:.0f} MB, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print("| target | tensors loaded as is | adapted | new | skipped | surplus | median s |")
        print("|---|---|---|---|---|---|---|")
        for name, build in targets().items():
            times, report = [], None
            for _ in range(args.repeats):
                network = build()
                started = time.perf_counter()
                with torch.no_grad():
                    report = transfer_weights(network, path)
                times.append(time.perf_counter() - started)
            new = report.n_missing + len(report.reinitialised)
            print(f"| {name} | {report.n_loaded - len(report.adapted)} | {len(report.adapted)} | {new} | "
                  f"{report.n_shape_mismatched} | {len(report.surplus)} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
