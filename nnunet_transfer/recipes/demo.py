"""``nnunet-transfer demo``: what MOTS pretraining gains on KiTS21, measured on embedded synthetic data, on CPU.

1. synthetic MOTS sources (LiTS, KiTS19, MSD layouts) -> ``convert mots`` -> ``nnUNetv2_plan_and_preprocess``
   -> the demo plans (nnU-Net's plans with fewer features per stage, see :func:`write_demo_plans`)
2. synthetic KiTS21 (official layout, other scans than the MOTS sources) -> ``convert kits21`` -> ``align-plans``
   -> a ``splits_final.json`` that keeps the held-out test cases out of every training
3. one DoDNet-style pretraining, ``nnUNetv2_train -tr MOTSPretrainTrainer`` (a short, seeded variant; cached with
   its sha256 for later runs), next to it the KiTS21 HEC fine-tunings from scratch, then those from the MOTS weights
   (``-pretrained_weights``): same budget, plans and seeds on both sides, ``jobs`` trainings at a time; one fold of
   the splits per number of labelled target cases (``--target-cases 2 4 8`` gives the few-label curve)
4. nnU-Net's predictor on the held-out cases -> ``evaluate kits21`` (Dice and Surface Dice per HEC)
5. mean +- sd over seeds, paired differences, ``demo_results.json`` and plots

A seed fixes everything random in a fine-tuning (:mod:`nnunet_transfer.utils.seeding`), so a seed reproduces its
numbers. The trainer variants are written into the workspace, the way nnU-Net users make variants. The statistics,
tables and plots are in :mod:`.demo_report`; this module (some 510 lines) is the pipeline, one function that reads
top to bottom as the steps above, and its configuration, splits, time estimate and pretraining cache.

Size: about 513 lines, as the demo's one pipeline (data, pretraining with its cache, fine-tuning over seeds,
scoring), step after step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_transfer.discovery import (EXT_TRAINER_VARIABLE, NNUNET_PATH_VARIABLES, environment_variables,
                                       set_nnunet_folders)
from nnunet_transfer.recipes.demo_report import (  # noqa: F401  (mean_sd, verdict, NOT_LEARNED_DICE: re-exported)
    MODELS, NOT_LEARNED_DICE, _plot_curves, _plot_few_label_curve, _validation_curve, comparison_table, mean_sd,
    per_seed_lines, summarise, verdict)
from nnunet_transfer.utils.hashing import sha256_of_file
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source
from nnunet_transfer.errors import InvalidValueError

MOTS_ID, MOTS_NAME = 990, "Dataset990_DemoMOTS"
KITS_ID, KITS_NAME = 991, "Dataset991_DemoKiTS21"
DEMO_PLANS = "nnUNetDemoPlans"
ALIGNED_PLANS = f"{DEMO_PLANS}_from{MOTS_ID}"
MOTS_TRAINER = "MOTSPretrainTrainer_demo"
RESULTS_FILE = "demo_results.json"
#: written next to the MOTS checkpoint: what it was trained with and its sha256 (the cache of the pretraining)
PRETRAINING_RECORD = "demo_pretraining.json"
#: raise when the pretraining changes in a way the key does not capture, so old caches are not reused
PRETRAINING_CACHE_VERSION = 3
#: fixed overhead of one ``nnUNetv2_train`` on CPU (imports, trainer lookup, data set-up), for the time estimate
_TRAINING_OVERHEAD_S = 12.0
#: a training step of the demo, fine-tuning or MOTS pretraining (augmentation, loss, validation and epoch ends
#: included; two one-thread trainings side by side) against :func:`estimate_step_seconds`' synthetic step, measured
#: with the defaults on an idle 2-core machine whose synthetic step took 0.08 s (0.21 s and 0.20 s)
_STEP_FACTOR = 2.6
#: a step of a training alone (``jobs`` 1, two threads) against one of two side by side, measured for the MOTS
#: pretraining on an idle 2-core machine (0.173 s against 0.19 s)
_ALONE_FACTOR = 0.9
#: synthesis, conversion, planning, preprocessing, prediction and evaluation, measured with the defaults
_FIXED_STAGES_S = 120.0


@dataclass
class DemoConfig:
    workspace: Optional[Path] = None
    #: synthetic cases per MOTS source
    mots_cases: int = 4
    #: synthetic cases of MOTS' kidney source (KiTS19: the largest MOTS source, 210 of its scans)
    kidney_cases: int = 16
    #: kidney tumours and cysts of the KiTS19 source and the KiTS21 target (``synthetic.KIDNEY_LESION_PROFILES``)
    kidney_lesions: str = "bright"
    #: labelled KiTS21 cases a fine-tuning trains on; several values give the few-label curve
    target_cases: Tuple[int, ...] = (6,)
    #: KiTS21 cases for nnU-Net's validation (the pseudo-Dice curves); never trained on, never scored
    val_cases: int = 2
    #: held-out KiTS21 cases that are scored; in no training
    test_cases: int = 6
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
    pretrain_epochs: int = 16
    pretrain_iterations: int = 75
    epochs: int = 8
    iterations: int = 40
    #: trainings run side by side (one CPU thread each on a 2-core machine): the pretraining next to the scratch
    #: fine-tunings, then the pretrained ones
    jobs: int = 2
    #: seed of the synthetic data (MOTS uses it, KiTS21 this + 1: different scans)
    data_seed: int = 0
    shape: Tuple[int, int, int] = (16, 48, 48)
    #: patch of the demo plans (nnU-Net's would hold the whole volume): a third of every batch is then centred on
    #: a kidney, tumour or cyst voxel (nnU-Net's foreground oversampling), so masses weigh more, and a step costs a
    #: third of the whole-volume one; None keeps nnU-Net's patch
    patch_size: Optional[Tuple[int, int, int]] = (16, 32, 32)
    #: features of the first stage of the demo plans, doubled per stage up to ``max_features``
    base_features: int = 8
    max_features: int = 64

    def __post_init__(self) -> None:
        self.target_cases = tuple(sorted({int(n) for n in self.target_cases}))
        if not self.target_cases or min(self.target_cases) < 1:
            raise InvalidValueError(f"--target-cases needs numbers >= 1, got {self.target_cases}")
        if not self.seeds:
            raise InvalidValueError("--seeds needs at least one seed")
        if self.test_cases < 1 or self.val_cases < 1:
            raise InvalidValueError("--test-cases and --val-cases must be at least 1")
        if self.jobs < 1:
            raise InvalidValueError("--jobs must be at least 1")

    @property
    def threads_per_job(self) -> int:
        """CPU threads of each fine-tuning (the cores shared among the side-by-side jobs)."""
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def pretraining_key(self) -> dict:
        """Everything the MOTS pretraining depends on: a cached checkpoint is reused only when this matches."""
        return {"mots_cases": self.mots_cases, "kidney_cases": self.kidney_cases,
                "kidney_lesions": self.kidney_lesions, "data_seed": self.data_seed, "shape": list(self.shape),
                "patch_size": list(self.patch_size) if self.patch_size else None,
                "base_features": self.base_features, "max_features": self.max_features,
                "pretrain_epochs": self.pretrain_epochs, "pretrain_iterations": self.pretrain_iterations,
                "seed": self.seeds[0], "version": PRETRAINING_CACHE_VERSION}

    @property
    def kits_cases(self) -> int:
        return max(self.target_cases) + self.val_cases + self.test_cases

    @property
    def trainings(self) -> int:
        return 1 + len(self.target_cases) * len(self.seeds) * len(MODELS)


def trainer_name(model: str, seed: int) -> str:
    return f"KiTS21HECTrainer_demo{model.capitalize()}_seed{seed}"


def default_workspace() -> Optional[Path]:
    """The user's nnU-Net folders when all three variables are set (None: pick ./nnunet_workspace)."""
    folders = set_nnunet_folders()
    if len(folders) == len(NNUNET_PATH_VARIABLES) and len({f.parent for f in folders}) == 1:
        return folders[0].parent
    return None


def _training_progress(line: str) -> bool:
    """nnU-Net log lines worth showing while a training runs."""
    return any(key in line for key in (": Epoch ", "train_loss", "Pseudo dice", "Yayy"))


class _Progress:
    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.time()

    def __call__(self, message: str) -> None:
        self.step += 1
        print(f"[demo {self.step}/{self.total} | {time.time() - self.started:5.0f} s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- plans, splits


def demo_features(n_stages: int, base: int = 8, cap: int = 64) -> List[int]:
    """Features per stage of the demo network: ``base`` doubled per stage, capped (nnU-Net: 32 .. 320)."""
    return [min(base * 2 ** i, cap) for i in range(n_stages)]


def write_demo_plans(preprocessed_dataset: Path, base: int, cap: int, source: str = "nnUNetPlans",
                     target: str = DEMO_PLANS, configuration: str = "3d_fullres",
                     patch_size: Optional[Sequence[int]] = None) -> Path:
    """A copy of nnU-Net's plans whose network has fewer features per stage (an ordinary plans field).

    Everything else (spacing, topology, batch size, normalisation, preprocessed data) stays nnU-Net's, so the
    preprocessed data is shared; only the U-Net is narrower, which is what lets a CPU train it in minutes.
    ``patch_size`` (z y x) replaces the patch, which must then be a multiple of the network's total stride per axis.
    """
    plans = json.loads((preprocessed_dataset / f"{source}.json").read_text())
    plans["plans_name"] = target  # nnU-Net names the model folder after this field
    config = plans["configurations"][configuration]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = demo_features(len(arch["features_per_stage"]), base, cap)
    if patch_size is not None:
        total_stride = [math.prod(s[axis] for s in arch["strides"]) for axis in range(len(config["patch_size"]))]
        if len(patch_size) != len(total_stride) or any(p % t for p, t in zip(patch_size, total_stride)):
            raise InvalidValueError(f"demo patch {list(patch_size)} does not fit the network of "
                                    f"{preprocessed_dataset / (source + '.json')}: each axis must be a multiple of "
                                    f"its total stride {total_stride}")
        config["patch_size"] = [int(p) for p in patch_size]
    path = preprocessed_dataset / f"{target}.json"
    path.write_text(json.dumps(plans, indent=2))
    return path


def demo_splits(case_ids: Sequence[str], target_cases: Sequence[int], val_cases: int,
                test_cases: int) -> Tuple[List[Dict[str, List[str]]], List[str]]:
    """nnU-Net splits with one fold per number of labelled cases, and the held-out test cases.

    The last ``test_cases`` ids are held out (in no fold), the ``val_cases`` before them validate every fold, and
    fold ``i`` trains on the first ``target_cases[i]`` of the rest (nested subsets, so the few-label curve compares
    like with like).
    """
    ids = list(case_ids)
    need = max(target_cases) + val_cases + test_cases
    if len(ids) < need:
        raise InvalidValueError(f"{len(ids)} cases, but the splits need {need}")
    test = ids[-test_cases:]
    val = ids[-test_cases - val_cases:-test_cases]
    pool = ids[:max(target_cases)]
    return [{"train": pool[:n], "val": list(val)} for n in target_cases], test


def held_out_folders(raw_dataset: Path, cases: Sequence[str], root: Path,
                     file_ending: str = ".nii.gz") -> Tuple[Path, Path]:
    """``root/images`` (the cases' ``_0000`` images, as nnU-Net's predictor reads them) and ``root/references``
    (their labels), both written anew from an nnU-Net raw dataset."""
    shutil.rmtree(root, ignore_errors=True)
    images, references = root / "images", root / "references"
    images.mkdir(parents=True)
    references.mkdir(parents=True)
    for case in cases:
        shutil.copy(raw_dataset / "imagesTr" / f"{case}_0000{file_ending}", images)
        shutil.copy(raw_dataset / "labelsTr" / f"{case}{file_ending}", references)
    return images, references


# ---------------------------------------------------------------------------------------------------- prediction


def predict_folder(ws: NnUNetWorkspace, model_folder: Path, fold: int, images: Path, output: Path) -> None:
    """nnU-Net's predictor (sliding window, no mirroring, CPU) on a folder, in this process.

    The same inference ``nnUNetv2_predict`` runs, without a new Python process per model (the demo predicts one
    model per seed and side). The checkpoints are the ones this demo just trained.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    # nnU-Net's predictor looks trainers up through the workspace's variables
    names = (*NNUNET_PATH_VARIABLES, EXT_TRAINER_VARIABLE)
    with environment_variables({k: ws.env[k] for k in names if k in ws.env}):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,),
                                                       checkpoint_name="checkpoint_final.pth")
        output.mkdir(parents=True, exist_ok=True)
        predictor.predict_from_files_sequential(str(images), str(output), save_probabilities=False, overwrite=True)


# ---------------------------------------------------------------------------------------------------- time estimate


def estimate_step_seconds(config: DemoConfig, batch_size: int = 2) -> float:
    """Seconds per training step of the demo network at the synthetic shape, measured now."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    z, y, x = config.patch_size or config.shape
    n = 5
    net = PlainConvUNet(1, n, demo_features(n, config.base_features, config.max_features), torch.nn.Conv3d,
                        [[1, 3, 3]] + [[3, 3, 3]] * (n - 1), [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * (n - 2),
                        [2] * n, 4, [2] * (n - 1), True, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
                        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.99)
    data = torch.randn(batch_size, 1, z, y, x)
    times = []
    for _ in range(6):  # the fastest of 5 (after one warm-up): robust to other jobs on the machine
        started = time.perf_counter()
        loss = sum(o.mean() for o in net(data))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def estimate_minutes(config: DemoConfig, step_seconds: float, cached_pretraining: bool = False) -> float:
    """Expected demo time: the trainings' steps plus overheads, queued as the demo queues them (the pretraining
    first, then the scratch side, then the pretrained side, which cannot start before the pretraining ends) on
    ``jobs`` lanes, plus the fixed stages."""
    scale = 1.0 if config.jobs > 1 else _ALONE_FACTOR
    pretrain = 0.0 if cached_pretraining else config.pretrain_epochs * config.pretrain_iterations * \
        _STEP_FACTOR * step_seconds * scale + _TRAINING_OVERHEAD_S
    finetune = config.epochs * config.iterations * _STEP_FACTOR * step_seconds * scale + \
        _TRAINING_OVERHEAD_S
    lanes = [0.0] * config.jobs

    def queue(duration: float, not_before: float = 0.0) -> float:
        lane = lanes.index(min(lanes))
        lanes[lane] = max(lanes[lane], not_before) + duration
        return lanes[lane]

    pretrained_from = queue(pretrain)
    per_side = len(config.target_cases) * len(config.seeds)
    for _ in range(per_side):
        queue(finetune)
    for _ in range(per_side):
        queue(finetune, pretrained_from)
    return (max(lanes) + _FIXED_STAGES_S) / 60.0


def pretraining_cached(checkpoint: Path, key: dict) -> Optional[str]:
    """The sha256 of a MOTS checkpoint an earlier demo run trained with the same settings (None: train anew).

    The record next to the checkpoint holds the settings and the checkpoint's sha256; the file must still have
    those bytes.
    """
    record = checkpoint.parent / PRETRAINING_RECORD
    if not (checkpoint.is_file() and record.is_file()):
        return None
    try:
        saved = json.loads(record.read_text())
    except json.JSONDecodeError:
        return None
    if saved.get("key") != key or sha256_of_file(checkpoint) != saved.get("sha256"):
        return None
    return saved["sha256"]


# ---------------------------------------------------------------------------------------------------- the demo


def run_demo(config: DemoConfig) -> dict:
    """Run the pipeline; returns paths, per-seed evaluations and their summary (also in ``demo_results.json``)."""
    from nnunet_transfer.data.synthetic import kits_case_ids
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    root = Path(config.workspace) if config.workspace else (default_workspace() or Path.cwd() / "nnunet_workspace")
    ws = NnUNetWorkspace(root)
    started = time.time()
    mots_checkpoint = ws.model_folder(MOTS_NAME, MOTS_TRAINER, "3d_fullres", DEMO_PLANS) / "fold_0" / \
        "checkpoint_final.pth"
    key = config.pretraining_key()
    cached = pretraining_cached(mots_checkpoint, key) \
        if (ws.preprocessed / MOTS_NAME / f"{DEMO_PLANS}.json").is_file() else None
    step_s = estimate_step_seconds(config)
    print(f"[demo] workspace: {ws.root} (nnU-Net folders inside; commands logged to {ws.log_file})")
    print(f"[demo] {config.trainings} trainings: 1 MOTS pretraining{' (cached)' if cached else ''}, scratch and "
          f"pretrained x {len(config.seeds)} seeds x {len(config.target_cases)} target size(s) "
          f"{list(config.target_cases)}, {config.jobs} at a time; expected run time about "
          f"{estimate_minutes(config, step_s, bool(cached)):.0f} min on this machine (a training step of the demo "
          f"network takes {step_s:.2f} s here)", flush=True)
    progress = _Progress(5)  # MOTS data, target data, trainings, prediction, results
    threads = config.threads_per_job if config.jobs > 1 else None
    finetune = dict(epochs=config.epochs, iterations=config.iterations, val_iterations=2, final_validation=False,
                    threads=threads)
    variants = [trainer_variant_source(MOTS_TRAINER, "MOTSPretrainTrainer", epochs=config.pretrain_epochs,
                                       iterations=config.pretrain_iterations, val_iterations=2,
                                       final_validation=False, seed=config.seeds[0], threads=threads)]
    for seed in config.seeds:
        for model in MODELS:
            variants.append(trainer_variant_source(trainer_name(model, seed), "KiTS21HECTrainer", seed=seed,
                                                   **finetune))
    ws.write_trainers("demo_trainers", variants)
    shape = [str(s) for s in config.shape]
    stage_times: Dict[str, float] = {}

    def timed(stage: str, t0: float) -> None:
        stage_times[stage] = stage_times.get(stage, 0.0) + time.time() - t0

    t0 = time.time()
    if cached:
        progress(f"synthetic MOTS sources, planning and pretraining: reusing {ws.preprocessed / MOTS_NAME} and "
                 f"{mots_checkpoint} (sha256 {cached[:16]}..., trained by an earlier run with the same settings; "
                 "delete the checkpoint to train it again)")
    else:
        progress(f"synthetic MOTS sources ({config.mots_cases} cases x 6 sources, {config.kidney_cases} KiTS19 "
                 f"cases), conversion, planning")
        ws.cli("synth", "mots", ws.root / "sources" / "MOTS", "--cases", config.mots_cases, "--source-cases",
               f"KiTS19={config.kidney_cases}", "--kidney-lesions", config.kidney_lesions, "--seed",
               config.data_seed, "--shape", *shape)
        ws.cli("convert", "mots", ws.root / "sources" / "MOTS", "-d", MOTS_ID, "--name", "DemoMOTS", "--force")
        ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MOTS_ID, "-c", "3d_fullres", "-np", "2")
        write_demo_plans(ws.preprocessed / MOTS_NAME, config.base_features, config.max_features,
                         patch_size=config.patch_size)
    plans = ws.preprocessed / MOTS_NAME / f"{DEMO_PLANS}.json"
    arch = json.loads(plans.read_text())["configurations"]["3d_fullres"]
    print(f"    demo plans {plans.name}: patch {arch['patch_size']}, batch {arch['batch_size']}, features per stage "
          f"{arch['architecture']['arch_kwargs']['features_per_stage']}", flush=True)
    timed("data and planning", t0)

    t0 = time.time()
    progress(f"synthetic KiTS21 ({config.kits_cases} cases: {max(config.target_cases)} for training, "
             f"{config.val_cases} validation, {config.test_cases} held out), conversion, align-plans, splits")
    ws.cli("synth", "kits21", ws.root / "sources" / "kits21", "--cases", config.kits_cases, "--seed",
           config.data_seed + 1, "--kidney-lesions", config.kidney_lesions, "--shape", *shape)
    ws.cli("convert", "kits21", ws.root / "sources" / "kits21", "-d", KITS_ID, "--name", "DemoKiTS21", "--force")
    ws.cli("align-plans", "-s", MOTS_ID, "-t", KITS_ID, "-sp", DEMO_PLANS, "-tp", ALIGNED_PLANS)
    case_ids = [f"case_{c:05d}" for c in kits_case_ids(config.kits_cases)]
    splits, test = demo_splits(case_ids, config.target_cases, config.val_cases, config.test_cases)
    (ws.preprocessed / KITS_NAME / "splits_final.json").write_text(json.dumps(splits, indent=2))
    eval_root = ws.root / "demo_eval"
    images, references = held_out_folders(ws.raw / KITS_NAME, test, eval_root)
    timed("KiTS21 data, align-plans", t0)

    runs: Dict[int, Dict[str, List[dict]]] = {n: {m: [] for m in MODELS} for n in config.target_cases}
    curves: Dict[int, Dict[str, List[List[float]]]] = {n: {m: [] for m in MODELS} for n in config.target_cases}
    train_seconds: Dict[str, float] = {}
    echo = _training_progress if config.jobs == 1 else None

    def pretrain() -> str:
        t = time.time()
        mots_checkpoint.parent.joinpath(PRETRAINING_RECORD).unlink(missing_ok=True)
        ws.train(MOTS_ID, "3d_fullres", "0", MOTS_TRAINER, plans=DEMO_PLANS, echo=echo)
        digest = sha256_of_file(mots_checkpoint)
        (mots_checkpoint.parent / PRETRAINING_RECORD).write_text(json.dumps({"key": key, "sha256": digest},
                                                                            indent=1))
        train_seconds["pretraining"] = round(time.time() - t, 1)
        print(f"    MOTS pretraining done in {time.time() - t:.0f} s: {mots_checkpoint} sha256 {digest}", flush=True)
        print(ws.cli("transfer-check", mots_checkpoint, "-d", KITS_ID, "-tr", trainer_name("pretrained", 0), "-p",
                     ALIGNED_PLANS).rstrip(), flush=True)
        return digest

    def fine_tune(fold: int, model: str, seed: int) -> None:
        if model == "pretrained":
            pretraining.result()  # the pretrained side starts once the checkpoint is there
        trainer = trainer_name(model, seed)
        extra = ("-pretrained_weights", str(mots_checkpoint)) if model == "pretrained" else ()
        t = time.time()
        ws.train(KITS_ID, "3d_fullres", str(fold), trainer, *extra, plans=ALIGNED_PLANS, echo=echo)
        train_seconds[f"{model}_seed{seed}_n{fold}"] = round(time.time() - t, 1)
        print(f"    {model}, seed {seed}, fold {fold}: trained in {time.time() - t:.0f} s", flush=True)

    t0 = time.time()
    progress(("MOTS pretraining (cached), " if cached else
              f"MOTS pretraining: nnUNetv2_train {MOTS_ID} 3d_fullres 0 -tr {MOTS_TRAINER} -p {DEMO_PLANS} "
              f"({config.pretrain_epochs} epochs x {config.pretrain_iterations} iterations), while ")
             + f"fine-tuning from scratch, then from the MOTS weights, seeds {list(config.seeds)}, "
             f"{list(config.target_cases)} labelled case(s): nnUNetv2_train {KITS_ID} 3d_fullres FOLD -tr "
             f"KiTS21HECTrainer_demo{{Scratch,Pretrained}}_seed{{N}} -p {ALIGNED_PLANS} ({config.epochs} epochs x "
             f"{config.iterations} iterations each), {config.jobs} training(s) at a time")
    # one queue: the pretraining first, the scratch side next (it needs no checkpoint), the pretrained side last
    jobs = [(fold, model, seed) for model in MODELS for fold in range(len(config.target_cases))
            for seed in config.seeds]
    pool = ThreadPoolExecutor(max_workers=config.jobs)
    try:
        pretraining = pool.submit(lambda: cached) if cached else pool.submit(pretrain)
        for done in [pretraining] + [pool.submit(fine_tune, *job) for job in jobs]:
            done.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # what has not started does not start; the running finish
        raise
    pool.shutdown()
    cached = pretraining.result()
    timed("pretraining and fine-tuning", t0)

    t0 = time.time()
    progress("prediction of the held-out cases and evaluation")
    for fold, n_cases in enumerate(config.target_cases):
        for seed in config.seeds:
            for model in MODELS:
                trainer = trainer_name(model, seed)
                model_folder = ws.model_folder(KITS_NAME, trainer, "3d_fullres", ALIGNED_PLANS)
                out = eval_root / f"n{n_cases}" / f"{model}_seed{seed}"
                with ws.log_file.open("a") as log, redirect_stdout(log):  # nnU-Net's predictor talks a lot
                    print(f"$ (in process) nnU-Net predictor {model_folder} fold {fold} -> {out}; evaluate kits21")
                    predict_folder(ws, model_folder, fold, images, out)
                    result = evaluate_kits21(out, references, output_json=out / "kits_metrics.json")
                runs[n_cases][model].append({"seed": seed, "mean": result["mean"], "cases": len(result["per_case"])})
                curves[n_cases][model].append(_validation_curve(model_folder / f"fold_{fold}"))
                print(f"    {model:<10} seed {seed}: held-out Dice " + ", ".join(
                    f"{hec} {result['mean'][hec]['dice']:.3f}" for hec in result["mean"]), flush=True)
    timed("prediction and evaluation", t0)

    progress("results")
    main_n = max(config.target_cases)
    summary = {n: summarise(runs[n]) for n in config.target_cases}
    summary_sd = {n: summarise(runs[n], "surface_dice") for n in config.target_cases}
    plot = ws.root / "demo_validation_curves.png"
    _plot_curves(curves[main_n], plot, f"KiTS21 HEC fine-tuning, {main_n} labelled synthetic cases")
    few_label_plot = None
    if len(config.target_cases) > 1:
        few_label_plot = ws.root / "demo_few_label_curve.png"
        _plot_few_label_curve(summary, few_label_plot)
    total_s = time.time() - started
    results = {
        "scratch": runs[main_n]["scratch"], "pretrained": runs[main_n]["pretrained"],
        "target_cases": main_n, "test_cases": test, "seeds": list(config.seeds),
        "summary": {"dice": summary[main_n], "surface_dice": summary_sd[main_n]},
        "few_label_curve": {str(n): {"runs": runs[n], "summary": summary[n]} for n in config.target_cases},
        "validation_curves": {str(n): curves[n] for n in config.target_cases},
        "stage_seconds": {k: round(v, 1) for k, v in stage_times.items()}, "total_seconds": round(total_s, 1),
        "training_seconds": train_seconds, "pretrained_checkpoint": {"path": str(mots_checkpoint),
                                                                       "sha256": cached},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()
                   if k != "workspace"},
    }
    results_file = ws.root / RESULTS_FILE
    tmp = results_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(results_file)

    table = comparison_table(summary[main_n])
    print(f"\nKiTS21 HEC on {len(test)} held-out synthetic cases, fine-tuned on {main_n} labelled cases, "
          f"{len(config.seeds)} seeds per side (mean +- sd over seeds; paired diff = pretrained - scratch, same seed)")
    print(table)
    print(per_seed_lines(runs[main_n]))
    print("\nSurface Dice\n" + comparison_table(summary_sd[main_n], "SD"))
    if len(config.target_cases) > 1:
        print("\nkidney_and_mass Dice against labelled target cases")
        for n in config.target_cases:
            s = summary[n]["kidney_and_mass"]
            print(f"  {n:>3} cases: scratch {s['scratch'][0]:.3f} +- {s['scratch'][1]:.3f}   pretrained "
                  f"{s['pretrained'][0]:.3f} +- {s['pretrained'][1]:.3f}   diff {s['difference'][0]:+.3f}")
        print(f"few-label curve: {few_label_plot}")
    print("\ntime per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_times.items())
          + f"; total {total_s / 60:.1f} min")
    print("time per training: " + ", ".join(f"{k} {v:.0f} s" for k, v in train_seconds.items()))
    print(f"validation curves: {plot}\nresults: {results_file}\n"
          "(synthetic phantoms on CPU: this shows the transfer mechanism at work, not the gain on real KiTS21 data)")
    return {"workspace": ws.root, "results": results, "curves": curves, "plot": plot, "table": table,
            "few_label_plot": few_label_plot, "results_file": results_file}
