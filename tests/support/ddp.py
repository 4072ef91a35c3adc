"""DDP on the CPU for tests: two gloo ranks, and a trainer's own steps run in them or in one process.

:class:`GlooRanks` starts its rank processes once (``spawn``), each in a gloo process group on the CPU, and runs
functions in all of them (:meth:`GlooRanks.run`), so a test module pays the start-up once. :func:`run_trainer`
builds one of our trainers exactly as nnU-Net's ``run_training`` does (``trainer.initialize()``, which under DDP
splits the global batch and oversampling over the ranks, converts and wraps the network and builds the loss with
``is_ddp``), then drives nnU-Net's own hooks: ``on_train_epoch_start`` / ``train_step`` / ``on_train_epoch_end``,
``on_validation_epoch_start`` / ``validation_step`` / ``on_validation_epoch_end`` and optionally
``perform_actual_validation``. The same call in the test process (no process group) is the one-process reference
on the whole batch; each rank gets its slice of the same global batch (rank order, nnU-Net's per-rank sizes).

:func:`max_relative_error` compares the results.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import queue
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import distributed as dist

__all__ = ["GlooRanks", "TrainerRun", "run_trainer", "max_relative_error", "reference_and_ranks"]

#: a collective that waits longer than this fails instead of hanging the test run
COLLECTIVE_TIMEOUT_S = 120


def _resolve(path: str) -> Callable:
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _rank_main(rank: int, world: int, init_file: str, inbox, outbox) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        while True:
            job = inbox.get()
            if job is None:
                return
            function, args, kwargs = job
            try:
                outbox.put((rank, True, _resolve(function)(*args, **kwargs)))
            except BaseException:  # report it to the test; the rank stays up for the next job
                outbox.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class GlooRanks:
    """``world`` processes in one gloo process group on the CPU; :meth:`run` runs a function in each of them."""

    def __init__(self, world: int = 2):
        self.world = world
        context = mp.get_context("spawn")
        self._folder = tempfile.TemporaryDirectory(prefix="gloo_")
        init_file = str(Path(self._folder.name) / "rendezvous")
        self._inboxes = [context.Queue() for _ in range(world)]
        self._outbox = context.Queue()
        self._processes = [context.Process(target=_rank_main, daemon=True,
                                           args=(rank, world, init_file, self._inboxes[rank], self._outbox))
                           for rank in range(world)]
        for process in self._processes:
            process.start()

    def run(self, function: str, *args, timeout: float = 2 * COLLECTIVE_TIMEOUT_S, **kwargs) -> List[Any]:
        """``function`` (``"module:name"``, importable in the ranks) called with the arguments in every rank; the
        results in rank order. A failure in any rank raises with that rank's traceback."""
        for inbox in self._inboxes:
            inbox.put((function, args, kwargs))
        results: Dict[int, Any] = {}
        failures = []
        for _ in range(self.world):
            try:
                rank, ok, value = self._outbox.get(timeout=timeout)
            except queue.Empty:
                self.close()
                raise TimeoutError(f"{function} did not finish in every rank within {timeout} s") from None
            if ok:
                results[rank] = value
            else:
                failures.append(f"rank {rank}:\n{value}")
        if failures:
            raise RuntimeError(f"{function} failed under DDP:\n" + "\n".join(failures))
        return [results[rank] for rank in range(self.world)]

    def close(self) -> None:
        for inbox, process in zip(self._inboxes, self._processes):
            if process.is_alive():
                inbox.put(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        self._folder.cleanup()


# ----------------------------------------------------------------------------------------------------------------
# a trainer's own steps
# ----------------------------------------------------------------------------------------------------------------

TrainerRun = Dict[str, Any]


def _rank_slice(global_size: int, local_size: int) -> slice:
    """This rank's samples of the global batch: nnU-Net's per-rank sizes, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return slice(0, global_size)
    sizes: List[Optional[int]] = [None] * dist.get_world_size()
    dist.all_gather_object(sizes, local_size)
    if sum(sizes) != global_size:
        raise AssertionError(f"per-rank batch sizes {sizes} do not add up to the global batch {global_size}")
    start = sum(sizes[:dist.get_rank()])
    return slice(start, start + local_size)


def _take(batch: dict, part: slice) -> dict:
    def cut(value):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return [v[part] for v in value]
        return value[part]

    return {key: cut(value) for key, value in batch.items()}


def _parameters(trainer) -> Dict[str, torch.Tensor]:
    from nnunet_transfer.utils.modules import unwrap_network

    return {n: p.detach().clone() for n, p in unwrap_network(trainer.network).named_parameters()}


def _gradients(trainer) -> Dict[str, Optional[torch.Tensor]]:
    from nnunet_transfer.utils.modules import unwrap_network

    return {n: None if p.grad is None else p.grad.detach().clone()
            for n, p in unwrap_network(trainer.network).named_parameters()}


def _nnunet_ddp_deep_supervision_weights(trainer) -> None:
    """Give the trainer's deep-supervision wrapper the weights ``nnUNetTrainer._build_loss`` uses under DDP (lowest
    output 1e-6 instead of 0, then normalised)."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    for module in trainer.loss.modules():
        if isinstance(module, DeepSupervisionWrapper):
            weights = np.array([1 / (2 ** i) for i in range(len(module.weight_factors))])
            weights[-1] = 1e-6
            module.weight_factors = tuple(weights / weights.sum())


def run_trainer(trainer: str, plans: dict, configuration: str, dataset_json: dict, preprocessed: str,
                results: str, batch: str, epochs: Sequence[int] = (0,), validate: bool = False,
                final_validation: bool = False, seed: int = 0, output_file: Optional[str] = None,
                deep_supervision: Optional[bool] = None, float64: bool = True) -> TrainerRun:
    """Build ``trainer`` (``"module:Class"``) on the CPU, run one ``train_step`` per epoch of ``epochs`` on this
    process's part of the global batch from ``batch`` (``"module:function"``, ``f(trainer) -> batch dict`` with
    ``data``, ``target`` (tensor or deep-supervision list) and ``keys``), optionally the validation hooks on the
    same batch and the final validation; return what nnU-Net logged, the gradients and parameters after every step,
    and (``output_file``, a name in the fold folder) that file's JSON from the final validation.

    ``deep_supervision`` sets nnU-Net's ``enable_deep_supervision`` (None: the trainer's own). With deep supervision
    nnU-Net's own loss differs between one process and DDP: ``nnUNetTrainer._build_loss`` weights the
    lowest-resolution output 0 on one process and 1e-6 under DDP (so that DDP sees a gradient of every parameter),
    so that output's layer trains only under DDP. The one-process run therefore uses nnU-Net's DDP weights
    (:func:`_nnunet_ddp_deep_supervision_weights`): the comparison is then about our code, not about that choice.

    With ``float64`` the network's parameters and the input are float64 (our losses compute in float32 as in
    training; nnU-Net's final validation loads float32 data, so it needs ``float64=False``): a float32
    parameter cannot hold a small update exactly (``p - lr * g`` rounds to the parameter's last bits), which would
    hide the update's agreement under rounding.
    """
    os.environ.update(nnUNet_preprocessed=preprocessed, nnUNet_results=results, nnUNet_raw=results,
                      nnUNet_n_proc_DA="0")
    torch.manual_seed(seed)
    np.random.seed(seed)
    cls = _resolve(trainer)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if float64 else default_dtype)  # see the docstring
    try:
        instance = cls(dict(plans, continue_training=False), configuration, 0, dataset_json,
                       device=torch.device("cpu"))
        if deep_supervision is not None:
            instance.enable_deep_supervision = deep_supervision
        instance.initialize()
    finally:
        torch.set_default_dtype(default_dtype)
    if not instance.is_ddp:
        _nnunet_ddp_deep_supervision_weights(instance)
    global_batch = _resolve(batch)(instance)
    global_batch["data"] = global_batch["data"].to(torch.get_default_dtype() if not float64 else torch.float64)
    part = _rank_slice(len(global_batch["keys"]), instance.batch_size)
    local = _take(global_batch, part)

    run: TrainerRun = {"is_ddp": instance.is_ddp, "batch_size": instance.batch_size, "step_losses": [],
                       "gradients": [], "parameters": [], "updates": [], "train_losses": []}
    for epoch in epochs:
        before = _parameters(instance)
        instance.current_epoch = epoch
        instance.on_train_epoch_start()
        output = instance.train_step(local)
        run["step_losses"].append(float(output["loss"]))
        run["gradients"].append(_gradients(instance))
        run["parameters"].append(_parameters(instance))
        run["updates"].append({n: p - before[n] for n, p in run["parameters"][-1].items()})
        instance.on_train_epoch_end([output])
        run["train_losses"].append(float(instance.logger.get_value("train_losses", step=-1)))
    if validate:
        instance.on_validation_epoch_start()
        with torch.no_grad():
            outputs = [instance.validation_step(local)]
        instance.on_validation_epoch_end(outputs)
        run["validation"] = {key: instance.logger.get_value(key, step=-1)
                             for key in ("val_losses", "mean_fg_dice", "dice_per_class_or_region")}
    if final_validation:
        instance.perform_actual_validation()
        if output_file is not None and instance.local_rank == 0:
            run["output_file"] = json.loads((Path(instance.output_folder) / output_file).read_text())
    return run


def reference_and_ranks(ranks: GlooRanks, tmp: Path, **spec) -> tuple:
    """:func:`run_trainer` in this process (the one-process reference) and in every rank, each with its own
    results folder; returns ``(reference, [rank results])``."""
    reference = run_trainer(**dict(spec, results=str(tmp / "results_single")))
    assert not reference["is_ddp"]
    distributed = ranks.run("support.ddp:run_trainer", **dict(spec, results=str(tmp / "results_ddp")))
    assert all(r["is_ddp"] for r in distributed)
    return reference, distributed


#: a tensor is compared relative to its own norm or this fraction of the norm of all tensors together, whichever is
#: larger: gradients that are zero in exact arithmetic (the bias of a convolution followed by instance normalisation)
#: are float32 rounding noise (about 1e-8 of the total), whose relative difference means nothing
NOISE_FLOOR = 1e-2


def max_relative_error(result: Dict[str, Optional[torch.Tensor]], reference: Dict[str, Optional[torch.Tensor]]
                       ) -> float:
    """Largest ``|result - reference| / max(|reference|, NOISE_FLOOR * |all of reference|)`` (L2 norms) over the
    tensors; a missing gradient counts as zero. A real error in the normalisation of a loss (a wrong count) shows
    in every tensor that carries gradient; the floor keeps tensors whose exact gradient is zero from reporting
    their rounding noise as a relative error."""
    def dense(value, like):
        return torch.zeros_like(like) if value is None else value.double()

    names = sorted(reference)
    if sorted(result) != names:
        raise AssertionError(f"different tensors: {sorted(set(result) ^ set(names))}")
    shapes = {n: (reference[n] if reference[n] is not None else result[n]) for n in names}
    total = float(torch.sqrt(sum((dense(reference[n], shapes[n]) ** 2).sum() for n in names if shapes[n] is not None)))
    worst = 0.0
    for name in names:
        if shapes[name] is None:
            continue
        ref = dense(reference[name], shapes[name])
        diff = float((dense(result[name], shapes[name]) - ref).norm())
        scale = max(float(ref.norm()), NOISE_FLOOR * total)
        worst = max(worst, diff / scale if scale else (0.0 if diff == 0 else float("inf")))
    return worst
