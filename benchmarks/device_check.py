"""GPU check: every network and loss we ship, at a real patch size, under AMP and torch.compile, in one run.

For a GPU machine with PyTorch, with or without nnU-Net: where nnU-Net's stack (SimpleITK, blosc2, nibabel...) and
PyWavelets are not installed, what the check needs besides torch comes along as sources (``benchmarks/device_env.py``,
about 1.3 MiB): dynamic-network-architectures, nnunetv2 (its losses and ``get_network_from_plans``, which import
without the I/O stack) and batchgenerators.

  1. on a machine with nnU-Net:  python benchmarks/device_env.py copy   # -> benchmarks/.device_deps (git-ignored)
  2. on the GPU machine, from the repository root (with benchmarks/.device_deps):
             bash benchmarks/device_check.sh
     which runs
             PYTHONPATH=$PWD:$PWD/benchmarks/.device_deps PYTHONUNBUFFERED=1 \\
             python3 benchmarks/device_check.py --out $OUT --budget-s 540
     (``BUDGET_S=300 bash benchmarks/device_check.sh`` for a shorter run). It writes $OUT/device_check.json (every
     figure), device_check.md (the tables) and device_check.log.
  3. copy the tables into benchmarks/RESULTS.md with the command.

Proof without a GPU (outside CI), importing exactly as a machine without nnU-Net would (about a minute on 2 CPU cores with
``--compile`` and no names, i.e. without torch.compile; CPU compile of the first network comes on top):

    python benchmarks/device_env.py copy
    python benchmarks/device_env.py simulate benchmarks/device_check.py --device cpu --tiny --out /tmp/device_check

What it measures, in this order (so the cheap figures exist even when the budget runs out):

1. every network (nnU-Net's PlainConvUNet and ResEnc-M U-Net built from plans-style dicts by nnU-Net's
   ``get_network_from_plans``, Med3D ResNet U-Nets of several depths, ResUNet-ASPP, attention U-Net, MLEAM with
   both encoders, the DoDNet dynamic-head network, the Med3D branch network, the localiser): a training step as
   nnU-Net's ``train_step`` does it (autocast, sum-of-squares surrogate loss over all deep-supervision outputs,
   backward, gradient clipping at 12, SGD with Nesterov momentum) under bf16 and under fp16 with a GradScaler:
   median step time and peak memory (``torch.cuda.max_memory_allocated``);
2. DoDNet's dynamic head, grouped convolution vs a per-sample loop (``bench_train_step.bench_head``);
3. the MLEAM edge targets, torch on the device vs the PyWavelets reference where it is installed, and their share
   of an MLEAM training step;
4. the HEC loss vs nnU-Net's ``DC_and_CE_loss`` and the partial-label loss vs nnU-Net's ``DC_and_BCE_loss``
   (forward + backward, per AMP dtype);
5. with two or more GPUs: our losses under DDP, 2 ranks on NCCL against one process on the whole batch, the max
   relative gradient error per loss (``benchmarks/ddp_loss_check.py``); with one GPU a line says it is skipped;
6. ``torch.compile`` of each network (bf16): compile time (the first step) and steady-state step time, until the
   budget is spent. A failure (of a compile, an out-of-memory...) is recorded for that entry and the run goes on.

``--budget-s`` bounds the whole run: each entry runs under an alarm set to the time that is left, results are
written after every entry, and what did not fit is recorded as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules, also under runpy

import device_env  # noqa: E402
from bench_architectures import _plain_kwargs, attention_unet, med3d_unet, mleam_unet, res_unet_aspp  # noqa: E402

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: seconds kept back at the end for writing results
RESERVE_S = 10.0
#: first guess of one network's compile time before any was measured (GPU, 3D U-Net forward + backward)
FIRST_COMPILE_ESTIMATE_S = 90.0
#: nnU-Net's gradient clipping in train_step
GRAD_CLIP = 12.0


class BudgetExceeded(Exception):
    """The alarm for the time left in ``--budget-s`` went off."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread after ``seconds`` (wall clock)."""
    if seconds <= 0:
        raise BudgetExceeded("no time left")

    def _alarm(signum, frame):
        raise BudgetExceeded(f"stopped after {seconds:.0f} s: the budget is spent")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class PlansConfiguration:
    """The four fields of nnU-Net's ``ConfigurationManager`` that network construction reads (a plans-file
    configuration's ``architecture`` block and ``patch_size``): nnU-Net's plans handler itself imports its image
    I/O, which a machine without nnU-Net lacks."""

    network_arch_class_name: str
    network_arch_init_kwargs: dict
    network_arch_init_kwargs_req_import: List[str]
    patch_size: List[int]


def plans_configuration(patch: List[int], residual: bool = False) -> PlansConfiguration:
    """3d_fullres plans as nnU-Net writes them (class names as strings) for an isotropic ``patch``: the default
    PlainConvUNet, or with ``residual`` the ResEnc-M preset (ResidualEncoderUNet, blocks 1, 3, 4, 6, 6, 6...)."""
    kwargs = _plain_kwargs(1, 2, patch)
    req_import = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    kwargs.update(dropout_op=None, dropout_op_kwargs=None)
    for key in req_import:
        if kwargs[key] is not None:
            kwargs[key] = _class_path(kwargs[key])
    name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    if residual:
        n = kwargs.pop("n_stages")
        del kwargs["n_conv_per_stage"]
        kwargs.update(n_stages=n, n_blocks_per_stage=[1, 3, 4, 6, 6, 6, 6][:n], n_conv_per_stage_decoder=[1] * (n - 1))
        name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    return PlansConfiguration(name, kwargs, req_import, list(patch))


def from_plans(residual: bool = False) -> Callable[[int, int, List[int]], nn.Module]:
    def build(in_channels: int, num_classes: int, patch: List[int]) -> nn.Module:
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        c = plans_configuration(patch, residual)
        return get_network_from_plans(c.network_arch_class_name, c.network_arch_init_kwargs,
                                      c.network_arch_init_kwargs_req_import, in_channels, num_classes,
                                      allow_init=True, deep_supervision=True)

    return build


def dodnet(in_channels: int, num_classes: int, patch: List[int]) -> nn.Module:
    """The plans' PlainConvUNet with 8 output features under DoDNet's dynamic head (MOTS pretraining network)."""
    from nnunet_transfer.architectures.dynamic_head import DynamicHeadNetwork
    from nnunet_transfer.data import mots_tasks

    backbone = from_plans()(in_channels, 8, patch)
    return DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS,
                              mots_tasks.head_channel_index(), head_in_channels=8)


def med3d_branches(in_channels: int, num_classes: int, patch: List[int]) -> nn.Module:
    """Med3D's multi-branch pretraining network: a ResNet-10 encoder with one 1x1x1 branch per MOTS task."""
    from nnunet_transfer.architectures.med3d import Med3DResNet
    from nnunet_transfer.architectures.med3d_branches import Med3DBranchNetwork
    from nnunet_transfer.data import mots_tasks

    return Med3DBranchNetwork(Med3DResNet(depth=10, in_channels=in_channels), mots_tasks.NUM_TASKS,
                              mots_tasks.head_channel_index(), mots_tasks.HEAD_OUTPUTS_PER_TASK)


def localizer(in_channels: int, num_classes: int, patch: List[int]) -> nn.Module:
    """The plans' encoder with the centre-regression head (localisation pretraining)."""
    from nnunet_transfer.architectures.localizer import LocalizerNetwork

    return LocalizerNetwork.from_plans(plans_configuration(patch), in_channels)


@dataclass
class NetworkSpec:
    name: str
    build: Callable[[int, int, List[int]], nn.Module]
    num_classes: int = 3
    #: trained conditioned on one MOTS task per sample (DoDNet head, Med3D branches)
    task_conditioned: bool = False


def network_specs(mleam_depth: int) -> List[NetworkSpec]:
    """Every network we ship, in the order they are measured and compiled."""
    from nnunet_transfer.data import mots_tasks

    regions = mots_tasks.NUM_OUTPUT_CHANNELS
    return [
        NetworkSpec("nnU-Net PlainConvUNet (plans)", from_plans()),
        NetworkSpec("nnU-Net ResEnc-M U-Net (plans)", from_plans(residual=True)),
        NetworkSpec("Med3DUNet ResNet-18", med3d_unet(18)),
        NetworkSpec("ResUNet-ASPP", res_unet_aspp),
        NetworkSpec("Attention U-Net", attention_unet),
        NetworkSpec("MLEAM, plain encoder", mleam_unet("plain")),
        NetworkSpec("DoDNet dynamic head", dodnet, regions, task_conditioned=True),
        NetworkSpec("Med3D branches ResNet-10", med3d_branches, regions, task_conditioned=True),
        NetworkSpec("Localiser (plans encoder)", localizer),
        NetworkSpec("Med3DUNet ResNet-10", med3d_unet(10)),
        NetworkSpec("Med3DUNet ResNet-34", med3d_unet(34)),
        NetworkSpec("Med3DUNet ResNet-50", med3d_unet(50)),
        NetworkSpec(f"MLEAM, Med3D ResNet-{mleam_depth}", mleam_unet("med3d", mleam_depth)),
    ]


def surrogate_loss(out) -> torch.Tensor:
    """Mean of squares over every output (all deep-supervision scales): a loss whose cost is negligible, so the
    step time is the network's; the real losses are timed on their own."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


@dataclass
class Settings:
    device: torch.device
    patch: List[int]
    batch: int
    warmup: int
    steps: int
    budget_s: float
    out: Path
    compile_names: Optional[List[str]]  # None: every network
    only: Optional[List[str]]  # None: every network
    compile_dtype: str
    mleam_depth: int
    build_only: bool
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started) - RESERVE_S


class Results:
    """The results document, written to ``device_check.json`` and ``device_check.md`` after every entry."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.doc: dict = {"environment": environment(settings.device), "settings": {
            "device": str(settings.device), "patch": settings.patch, "batch": settings.batch,
            "warmup_steps": settings.warmup, "timed_steps": settings.steps, "budget_s": settings.budget_s,
            "compile_dtype": settings.compile_dtype, "build_only": settings.build_only},
            "networks": {}, "dynamic_head": None, "edge_targets": None, "losses": {}, "ddp_losses": None,
            "complete": False}
        settings.out.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.perf_counter() - self.settings.started, 1)
        for name, text in (("device_check.json", json.dumps(self.doc, indent=1) + "\n"),
                           ("device_check.md", markdown(self.doc))):
            tmp = self.settings.out / (name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.settings.out / name)


def environment(device: torch.device) -> dict:
    import dynamic_network_architectures

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           # the carried sources' manifest; None when the packages are the installed ones
           "carried": device_env.read_manifest(Path(dynamic_network_architectures.__file__).parents[1]),
           "pywavelets": _importable("pywt")}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cudnn=torch.backends.cudnn.version(),
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2 ** 30, 1))
    else:
        env.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> Optional[float]:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def _error(exc: BaseException) -> dict:
    """What a failed entry records (and prints, so the log shows it too)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(f"    FAILED: {text.splitlines()[0][:300]}", file=sys.stderr, flush=True)
    return {"error": text[:2000], "traceback_tail": traceback.format_exc()[-1500:]}


def timed_steps(step: Callable[[], object], s: Settings) -> dict:
    """Warm-up steps, then the median of the timed steps (synchronised), with the peak memory of all of them."""
    for _ in range(s.warmup):
        step()
    times = []
    for _ in range(s.steps):
        _sync(s.device)
        t0 = time.perf_counter()
        step()
        _sync(s.device)
        times.append(time.perf_counter() - t0)
    return {"step_ms": round(1000 * statistics.median(times), 2), "peak_gib": _peak_gib(s.device)}


class TrainStep:
    """One nnU-Net-style training step of ``model`` on a fixed random batch (see the module docstring)."""

    def __init__(self, spec: NetworkSpec, net: nn.Module, model: nn.Module, s: Settings, amp: Optional[str]):
        self.net, self.model, self.device = net, model, s.device
        self.x = torch.randn(s.batch, 1, *s.patch, device=s.device)
        self.dtype = AMP_DTYPES[amp] if amp else None
        self.optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
        self.scaler = torch.amp.GradScaler(s.device.type) if amp == "fp16" else None
        from nnunet_transfer.data import mots_tasks

        self.task_ids = (torch.arange(s.batch, device=s.device) % mots_tasks.NUM_TASKS
                         if spec.task_conditioned else None)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        conditioned = self.net.conditioned_on(self.task_ids) if self.task_ids is not None else contextlib.nullcontext()
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with conditioned, autocast:
            loss = surrogate_loss(self.model(self.x))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
            self.optimizer.step()
        return float(loss.detach())


def build_network(spec: NetworkSpec, s: Settings) -> nn.Module:
    torch.manual_seed(0)
    return spec.build(1, spec.num_classes, list(s.patch)).to(s.device).train()


#: why fp16 steps run on the CPU for the first network only
CPU_FP16_NOTE = ("fp16 convolutions have no fast CPU kernels (a 32^3 PlainConvUNet step took 85 s on this project's "
                 "CPU machine): on the CPU only the first network runs fp16, to prove the GradScaler path")


def measure_network_eager(spec: NetworkSpec, s: Settings, first: bool = True) -> dict:
    entry: dict = {}
    _reset_memory(s.device)
    net = build_network(spec, s)
    entry["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
    if s.build_only:
        loss = TrainStep(spec, net, net, s, amp=None)()
        if not math.isfinite(loss):
            raise FloatingPointError(f"{spec.name}: the surrogate loss is {loss}")
        entry["fp32_step"] = "ok"
        return entry
    for amp in AMP_DTYPES:
        if amp == "fp16" and s.device.type == "cpu" and not first:
            entry[amp] = {"skipped": CPU_FP16_NOTE}
            continue
        _reset_memory(s.device)
        try:
            entry[amp] = timed_steps(TrainStep(spec, net, net, s, amp), s)
        except BudgetExceeded:
            raise
        except Exception as exc:  # e.g. out of memory in one precision: record it, try the next
            entry[amp] = _error(exc)
    return entry


def measure_network_compiled(spec: NetworkSpec, s: Settings) -> dict:
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    _reset_memory(s.device)
    net = build_network(spec, s)
    model = torch.compile(net)
    step = TrainStep(spec, net, model, s, s.compile_dtype)
    _sync(s.device)
    t0 = time.perf_counter()
    step()  # compiles forward and backward
    _sync(s.device)
    compile_s = time.perf_counter() - t0
    entry = {"dtype": s.compile_dtype, "compile_s": round(compile_s, 1), **timed_steps(step, s),
             "graph_breaks": int(sum(torch._dynamo.utils.counters["graph_break"].values()))}
    return entry


def run_entry(results: Results, where: dict, key: str, fn: Callable[[], dict], s: Settings,
              need_s: float = 0.0) -> Optional[dict]:
    """``where[key] = fn()`` under the budget's alarm; failures and skips are recorded, never raised."""
    left = s.left()
    if left <= need_s or left <= 0:
        where[key] = {"skipped": f"budget: {max(left, 0):.0f} s left, about {need_s:.0f} s needed"}
        print(f"  {key}: skipped (budget)", flush=True)
        results.save()
        return None
    t0 = time.perf_counter()
    print(f"  {key} ...", flush=True)
    try:
        with time_limit(left):
            where[key] = fn()
    except BudgetExceeded as exc:
        where[key] = {"skipped": str(exc)}
    except Exception as exc:  # recorded per entry; the run goes on
        where[key] = _error(exc)
    where[key]["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"    -> {json.dumps(where[key])[:400]}", flush=True)
    results.save()
    return where[key]


def measure_dynamic_head(s: Settings) -> dict:
    from bench_train_step import bench_head

    r = bench_head(str(s.device), s.batch, tuple(s.patch), max(s.steps, 1))
    return {k: round(v, 3) for k, v in r.items()}


def measure_edge_targets(s: Settings, mleam_step: Optional[tuple]) -> dict:
    """Edge targets of a 3-label map at the 3 finest deep-supervision scales (what an MLEAM step computes)."""
    import numpy as np
    from bench_edge_targets import _toy_label_map, reference_edges

    from nnunet_transfer.losses.edge_targets import edge_targets_for_deep_supervision

    seg_np = np.stack([_toy_label_map(tuple(s.patch), 3, seed)[None] for seed in range(s.batch)])
    seg = torch.from_numpy(seg_np).to(s.device)
    scales = [seg[(...,) + (slice(None, None, 2 ** k),) * len(s.patch)] for k in range(3)]
    r = timed_steps(lambda: edge_targets_for_deep_supervision(scales), s)
    out = {"label_map": list(seg.shape), "scales": 3, "torch_ms": r["step_ms"], "torch_peak_gib": r["peak_gib"]}
    if mleam_step:  # (AMP dtype, MLEAM plain-encoder step ms): fp16 (nnU-Net's default), else bf16
        out["mleam_step_dtype"] = mleam_step[0]
        out["share_of_mleam_step"] = round(r["step_ms"] / mleam_step[1], 4)
    if not _importable("pywt"):
        out["pywavelets"] = "not installed here"
        return out
    full = edge_targets_for_deep_supervision([seg])[0].cpu().numpy()
    t0 = time.perf_counter()
    ref = reference_edges(seg_np)
    out["pywavelets_full_res_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    out["torch_full_res_ms"] = timed_steps(lambda: edge_targets_for_deep_supervision([seg]), s)["step_ms"]
    out["max_abs_diff"] = float(np.abs(full - ref).max())
    out["speedup_vs_pywavelets"] = round(out["pywavelets_full_res_ms"] / out["torch_full_res_ms"], 1)
    return out


def _loss_pair(s: Settings, amp: str, ours: nn.Module, baseline: nn.Module, logits_channels: int,
               target: torch.Tensor) -> dict:
    """Forward + backward of two losses on the same AMP-dtype logits; ratio ours / baseline."""
    logits = torch.randn(s.batch, logits_channels, *s.patch, device=s.device, requires_grad=True)

    def step(loss_fn: nn.Module) -> Callable[[], None]:
        def run() -> None:
            logits.grad = None
            with torch.autocast(s.device.type, dtype=AMP_DTYPES[amp]):
                loss = loss_fn(logits.to(AMP_DTYPES[amp]), target)
            loss.backward()
        return run

    if s.build_only:
        step(ours)()
        return {"forward_backward": "ok"}
    _reset_memory(s.device)
    a = timed_steps(step(ours), s)
    _reset_memory(s.device)
    b = timed_steps(step(baseline), s)
    return {"ours_ms": a["step_ms"], "baseline_ms": b["step_ms"], "ratio": round(a["step_ms"] / b["step_ms"], 3),
            "ours_peak_gib": a["peak_gib"], "baseline_peak_gib": b["peak_gib"]}


def measure_hec(s: Settings, amp: str) -> dict:
    """HEC loss (KiTS21 setting: 4 labels) vs nnU-Net's DC_and_CE_loss as its trainer configures it."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunet_transfer.losses.hec import HECDiceCELoss

    dice = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}
    target = torch.randint(0, 4, (s.batch, 1, *s.patch), device=s.device)
    baseline = DC_and_CE_loss(dict(dice), {}, weight_ce=1, weight_dice=1, ignore_label=None,
                              dice_class=MemoryEfficientSoftDiceLoss)
    return _loss_pair(s, amp, HECDiceCELoss(dice, {}), baseline, 4, target)


def measure_partial_label(s: Settings, amp: str) -> dict:
    """Partial-label Dice + BCE (MOTS regions, one task per sample) vs nnU-Net's region loss DC_and_BCE_loss."""
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunet_transfer.data import mots_tasks
    from nnunet_transfer.losses.partial_label import PartialLabelDiceBCELoss

    ours = PartialLabelDiceBCELoss([ch.task for ch in mots_tasks.OUTPUT_CHANNELS], batch_dice=True, smooth=1e-5)
    ours.task_ids = torch.arange(s.batch, device=s.device) % mots_tasks.NUM_TASKS
    baseline = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                               use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
    c = mots_tasks.NUM_OUTPUT_CHANNELS
    target = (torch.rand(s.batch, c, *s.patch, device=s.device) > 0.7).float()
    return _loss_pair(s, amp, ours.to(s.device), baseline, c, target)


def measure_ddp_losses() -> dict:
    """Our losses on 2 GPUs (NCCL, DDP) vs one process: max relative gradient error per loss."""
    from ddp_loss_check import two_rank_check

    return two_rank_check("cuda")


def select(specs: List[NetworkSpec], names: Optional[List[str]], option: str) -> List[NetworkSpec]:
    """The specs named (in that order), all of them for None."""
    if names is None:
        return specs
    by_name = {spec.name: spec for spec in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"{option}: unknown network(s) {unknown}; known: {list(by_name)}")
    return [by_name[n] for n in names]


def run(s: Settings) -> dict:
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer sets it
    results = Results(s)
    doc = results.doc
    print(f"device check on {s.device}: patch {s.patch}, batch {s.batch}, budget {s.budget_s:.0f} s; "
          f"results in {s.out}", flush=True)
    specs = select(network_specs(s.mleam_depth), s.only, "--only")

    print("1. networks, eager, bf16 and fp16", flush=True)
    for i, spec in enumerate(specs):
        where = doc["networks"].setdefault(spec.name, {})
        run_entry(results, where, "eager", lambda spec=spec, i=i: measure_network_eager(spec, s, i == 0), s)

    print("2.-4. dynamic head, edge targets, losses", flush=True)
    run_entry(results, doc, "dynamic_head", lambda: measure_dynamic_head(s), s)
    mleam = doc["networks"].get("MLEAM, plain encoder", {}).get("eager", {})
    mleam_step = next(((amp, mleam[amp]["step_ms"]) for amp in ("fp16", "bf16") if "step_ms" in mleam.get(amp, {})),
                      None)
    run_entry(results, doc, "edge_targets", lambda: measure_edge_targets(s, mleam_step), s)
    for amp in AMP_DTYPES:
        run_entry(results, doc["losses"], f"HEC vs DC_and_CE, {amp}", lambda amp=amp: measure_hec(s, amp), s)
        run_entry(results, doc["losses"], f"partial-label vs DC_and_BCE, {amp}",
                  lambda amp=amp: measure_partial_label(s, amp), s)

    gpus = torch.cuda.device_count() if s.device.type == "cuda" else 0
    if gpus >= 2:
        print("5. losses under DDP: 2 ranks, NCCL, vs one process", flush=True)
        run_entry(results, doc, "ddp_losses", measure_ddp_losses, s)
    else:
        doc["ddp_losses"] = {"skipped": f"{gpus} GPU(s): the 2-rank NCCL check of the losses needs two or more"}
        print(f"5. losses under DDP: skipped, {doc['ddp_losses']['skipped']}", flush=True)
        results.save()

    if not s.build_only:
        print(f"6. torch.compile ({s.compile_dtype})", flush=True)
        compile_times: List[float] = []
        for spec in select(specs, s.compile_names, "--compile"):
            need = 1.2 * max(compile_times) if compile_times else min(FIRST_COMPILE_ESTIMATE_S, s.left() / 2)
            entry = run_entry(results, doc["networks"].setdefault(spec.name, {}), "compiled",
                              lambda spec=spec: measure_network_compiled(spec, s), s, need)
            if entry and "compile_s" in entry:
                compile_times.append(entry["compile_s"])
    doc["complete"] = True
    results.save()
    return doc


def _cell(entry: Optional[dict], key: str, fmt: str = "{}") -> str:
    if not entry:
        return ""
    if "error" in entry:
        return "failed: " + entry["error"].splitlines()[0][:60].replace("|", "/")
    if "skipped" in entry:
        return "skipped"
    value = entry.get(key)
    return "" if value is None else fmt.format(value)


def markdown(doc: dict) -> str:
    """The results as markdown tables (what RESULTS.md takes)."""
    st, env = doc["settings"], doc["environment"]
    where = env.get("gpu") or env.get("cpu")
    lines = [f"# Device check: {where}, torch {env['torch']}, Python {env['python']}", "",
             f"Patch {'x'.join(map(str, st['patch']))}, batch {st['batch']}, median of {st['timed_steps']} steps "
             f"after {st['warmup_steps']} warm-up; train step = forward, surrogate loss, backward, clip, SGD. "
             f"Elapsed {doc.get('elapsed_s')} s of {st['budget_s']:.0f} s"
             f"{'' if doc.get('complete') else ' (incomplete)'}.", "",
             f"| network | params M | bf16 ms | bf16 peak GiB | fp16 ms | fp16 peak GiB | compile s "
             f"({st['compile_dtype']}) | compiled ms | compiled vs eager | graph breaks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, n in doc["networks"].items():
        eager, comp = n.get("eager") or {}, n.get("compiled")
        bf16 = eager.get("bf16") if "error" not in eager else eager
        fp16 = eager.get("fp16") if "error" not in eager else eager
        ratio = ""
        base = (eager.get(st["compile_dtype"]) or {}).get("step_ms")
        if comp and comp.get("step_ms") and base:
            ratio = f"{base / comp['step_ms']:.2f}x"
        lines.append(f"| {name} | {_cell(eager, 'params_m')} | {_cell(bf16, 'step_ms')} | {_cell(bf16, 'peak_gib')} "
                     f"| {_cell(fp16, 'step_ms')} | {_cell(fp16, 'peak_gib')} | {_cell(comp, 'compile_s')} "
                     f"| {_cell(comp, 'step_ms')} | {ratio} | {_cell(comp, 'graph_breaks')} |")
    head = doc.get("dynamic_head")
    if head:
        lines += ["", "| dynamic head (forward, fp32) | grouped ms | per-sample loop ms | speed-up |", "|---|---:|---:|---:|",
                  f"| 8->8->8->2, batch {st['batch']} | {_cell(head, 'grouped_ms')} | {_cell(head, 'loop_ms')} "
                  f"| {_cell(head, 'speedup', '{:.2f}x')} |"]
    edges = doc.get("edge_targets")
    if edges:
        lines += ["", f"| edge targets (3 labels, 3 scales) | torch ms | share of MLEAM {edges.get('mleam_step_dtype', '')} "
                  "step | PyWavelets full-res "
                  "ms | torch full-res ms | max diff |", "|---|---:|---:|---:|---:|---:|",
                  f"| {'x'.join(map(str, edges.get('label_map', [])))} | {_cell(edges, 'torch_ms')} "
                  f"| {_cell(edges, 'share_of_mleam_step', '{:.2%}')} "
                  f"| {_cell(edges, 'pywavelets_full_res_ms') or edges.get('pywavelets', '')} "
                  f"| {_cell(edges, 'torch_full_res_ms')} | {_cell(edges, 'max_abs_diff', '{:.1e}')} |"]
    if doc["losses"]:
        lines += ["", "| loss (forward + backward) | ours ms | nnU-Net baseline ms | ratio | ours peak GiB |",
                  "|---|---:|---:|---:|---:|"]
        for name, e in doc["losses"].items():
            lines.append(f"| {name} | {_cell(e, 'ours_ms')} | {_cell(e, 'baseline_ms')} | {_cell(e, 'ratio')} "
                         f"| {_cell(e, 'ours_peak_gib')} |")
    ddp = doc.get("ddp_losses")
    if ddp:
        lines += ["", "| loss under DDP (2 ranks, global batch 4 = 2 + 2) | max relative gradient error vs one process |",
                  "|---|---:|"]
        if "max_relative_gradient_error" in ddp:
            lines += [f"| {name} | {err:.1e} |" for name, err in ddp["max_relative_gradient_error"].items()]
        else:
            lines.append(f"| all | {_cell(ddp, 'max')} |")
    return "\n".join(lines) + "\n"


def failures(doc: dict) -> List[str]:
    """Names of the entries that recorded an error (at any depth)."""
    found: List[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            if "error" in node:
                found.append(path)
                return
            for key, value in node.items():
                walk(value, f"{path}/{key}" if path else key)

    walk({k: doc[k] for k in ("networks", "dynamic_head", "edge_targets", "losses", "ddp_losses")}, "")
    return found


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when available)")
    parser.add_argument("--tiny", action="store_true",
                        help="16^3 patch, 1 warm-up + 1 timed step, MLEAM on ResNet-10, compile only the first "
                             "network: the CPU proof of the whole check (a few minutes on 2 cores)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="patch size (default 128 128 128)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (nnU-Net's 3d_fullres default: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per entry (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per entry (default 8)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="folder for device_check.json / .md (default $OUT)")
    parser.add_argument("--compile", nargs="*", default=None, metavar="NETWORK",
                        help="networks to torch.compile, in this order (default: all; none with no names)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NETWORK", help="measure only these networks")
    parser.add_argument("--compile-dtype", choices=sorted(AMP_DTYPES), default="bf16")
    parser.add_argument("--mleam-depth", type=int, default=None, help="Med3D depth under MLEAM (default 101)")
    parser.add_argument("--build-only", action="store_true",
                        help="build every network and loss and run one fp32 step each; no timing, no compile")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out is required when $OUT is not set")
    tiny = args.tiny or args.build_only
    compile_names = args.compile
    if compile_names is None and tiny:
        compile_names = [(args.only or [network_specs(10)[0].name])[0]]
    s = Settings(device=torch.device(args.device), patch=args.patch or ([16] * 3 if tiny else [128] * 3),
                 batch=args.batch, warmup=args.warmup if args.warmup is not None else (1 if tiny else 3),
                 steps=args.steps or (1 if tiny else 8), budget_s=args.budget_s, out=args.out,
                 compile_names=compile_names, only=args.only, compile_dtype=args.compile_dtype,
                 mleam_depth=args.mleam_depth or (10 if tiny else 101), build_only=args.build_only)
    doc = run(s)
    print(markdown(doc), flush=True)
    failed = failures(doc)
    print(f"{len(failed)} failed entr{'y' if len(failed) == 1 else 'ies'}{': ' if failed else ''}{', '.join(failed)}")
    return 1 if s.build_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
