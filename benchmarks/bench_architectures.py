"""Cost of each architecture at a benchmark patch size, next to nnU-Net's plain U-Net (CPU).

For every network: parameters (total and pretrained encoder), activation memory kept for the backward pass
(bytes of the distinct tensors autograd saves, measured with ``saved_tensors_hooks``), and the median time
of a training forward and of its backward pass. nnU-Net's reference is ``PlainConvUNet`` configured as
nnU-Net's 3d_fullres planner would for an isotropic patch (32 features doubling to 320, 2 convs per stage,
InstanceNorm, LeakyReLU, pooling down to 4 voxels, at most 5 times).

    python benchmarks/bench_architectures.py --quick
    python benchmarks/bench_architectures.py --patch 64 64 64 --batch 2 --depths 10 18 34 50
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch
from torch import nn

from nnunet_transfer.architectures.med3d import Med3DResNet


def nnunet_plain_unet(in_channels: int, num_classes: int, patch: list[int]) -> nn.Module:
    """nnU-Net's default 3d_fullres PlainConvUNet for an isotropic-spacing patch."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n_pool = [min(5, int(math.floor(math.log2(p / 4)))) for p in patch]
    n_stages = max(n_pool) + 1
    strides = [[1, 1, 1]] + [[2 if n_pool[a] > s else 1 for a in range(3)] for s in range(n_stages - 1)]
    return PlainConvUNet(
        input_channels=in_channels, n_stages=n_stages,
        features_per_stage=[min(32 * 2 ** i, 320) for i in range(n_stages)], conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n_stages, strides=strides, n_conv_per_stage=[2] * n_stages,
        num_classes=num_classes, n_conv_per_stage_decoder=[2] * (n_stages - 1), conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=True,
    )


def med3d_unet(depth: int) -> Callable[[int, int, list[int]], nn.Module]:
    def build(in_channels: int, num_classes: int, patch: list[int]) -> nn.Module:
        from nnunet_transfer.architectures.med3d_unet import Med3DUNet, med3d_plans_entry

        kwargs = med3d_plans_entry(depth, patch)["arch_kwargs"]
        return Med3DUNet(input_channels=in_channels, num_classes=num_classes, deep_supervision=True, **kwargs)

    return build


def _plain_kwargs(in_channels: int, num_classes: int, patch: list[int]) -> dict:
    """The constructor arguments of :func:`nnunet_plain_unet`'s network (to put other decoders on the same encoder)."""
    net = nnunet_plain_unet(in_channels, num_classes, patch)
    enc = net.encoder
    return dict(n_stages=len(enc.stages), features_per_stage=list(enc.output_channels), conv_op=nn.Conv3d,
                kernel_sizes=[list(k) for k in enc.kernel_sizes], strides=[list(s) for s in enc.strides],
                n_conv_per_stage=[2] * len(enc.stages), n_conv_per_stage_decoder=[2] * (len(enc.stages) - 1),
                conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def attention_unet(in_channels: int, num_classes: int, patch: list[int]) -> nn.Module:
    from nnunet_transfer.architectures.attention_unet import AttentionUNet

    return AttentionUNet(input_channels=in_channels, num_classes=num_classes, deep_supervision=True,
                         **_plain_kwargs(in_channels, num_classes, patch))


def res_unet_aspp(in_channels: int, num_classes: int, patch: list[int]) -> nn.Module:
    from nnunet_transfer.architectures.res_unet_aspp import PAPER_ENCODER_BLOCKS, ResUNetASPP

    kwargs = _plain_kwargs(in_channels, num_classes, patch)
    del kwargs["n_conv_per_stage"]  # residual stages count blocks instead
    n = kwargs["n_stages"]
    kwargs.update(n_blocks_per_stage=list(PAPER_ENCODER_BLOCKS[:n]), n_conv_per_stage_decoder=[1] * (n - 1))
    return ResUNetASPP(input_channels=in_channels, num_classes=num_classes, deep_supervision=True, **kwargs)


def mleam_unet(encoder: str, depth: int = 101) -> Callable[[int, int, list[int]], nn.Module]:
    def build(in_channels: int, num_classes: int, patch: list[int]) -> nn.Module:
        from nnunet_transfer.architectures.mleam import MLEAMUNet

        if encoder == "plain":
            kwargs = _plain_kwargs(in_channels, num_classes, patch)
            kwargs["n_conv_per_stage_decoder"] = 1
            return MLEAMUNet(in_channels, num_classes, encoder="plain", deep_supervision=True, **kwargs)
        return MLEAMUNet(in_channels, num_classes, encoder="med3d", deep_supervision=True, depth=depth,
                         decoder_norm_op=nn.InstanceNorm3d)

    return build


def activation_bytes(net: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor | list[torch.Tensor]]:
    """Bytes of the distinct storages autograd keeps for backward during one forward, and the output."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params), out


def _loss(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


def measure(build: Callable, patch: list[int], batch: int, repeats: int, in_channels: int = 1,
            num_classes: int = 3) -> dict:
    torch.manual_seed(0)
    net = build(in_channels, num_classes, patch).train()
    x = torch.randn(batch, in_channels, *patch)
    total = sum(p.numel() for p in net.parameters())
    encoder = getattr(net, "encoder", None)
    pretrained = sum(p.numel() for p in encoder.parameters()) if isinstance(encoder, Med3DResNet) else 0
    act, out = activation_bytes(net, x)
    _loss(out).backward()  # warm-up
    fwd, bwd = [], []
    for _ in range(repeats):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = _loss(net(x))
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return {"params_m": total / 1e6, "pretrained_m": pretrained / 1e6, "act_mb": act / 2 ** 20,
            "fwd_s": statistics.median(fwd), "bwd_s": statistics.median(bwd)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 18, 34, 50])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mleam-depth", type=int, default=101, help="Med3D depth under MLEAM (paper: 101)")
    parser.add_argument("--quick", action="store_true", help="32^3 patch, batch 1, 1 repeat, depths 10 and 18")
    args = parser.parse_args(argv)
    if args.quick:
        args.patch, args.batch, args.repeats, args.depths, args.mleam_depth = [32, 32, 32], 1, 1, [10, 18], 10
    torch.set_num_threads(args.threads)

    archs: list[tuple[str, Callable]] = [("nnU-Net PlainConvUNet", nnunet_plain_unet)]
    archs += [(f"Med3DUNet ResNet-{d}", med3d_unet(d)) for d in args.depths]
    archs += [("ResUNet-ASPP (KiTS paper)", res_unet_aspp), ("Attention U-Net", attention_unet),
              ("MLEAM, plain encoder", mleam_unet("plain")),
              (f"MLEAM, Med3D ResNet-{args.mleam_depth}", mleam_unet("med3d", args.mleam_depth))]
    print(f"patch {args.patch}, batch {args.batch}, {args.repeats} repeat(s), {args.threads} CPU thread(s), "
          f"torch {torch.__version__}")
    header = f"{'architecture':<24} {'params M':>9} {'pretrained M':>12} {'activations MB':>15} " \
             f"{'forward s':>10} {'backward s':>11}"
    print(header)
    print("-" * len(header))
    for name, build in archs:
        r = measure(build, args.patch, args.batch, args.repeats)
        print(f"{name:<24} {r['params_m']:9.2f} {r['pretrained_m']:12.2f} {r['act_mb']:15.1f} "
              f"{r['fwd_s']:10.3f} {r['bwd_s']:11.3f}", flush=True)


if __name__ == "__main__":
    main()
