"""``nnunet-transfer demo``: the whole transfer pipeline on embedded synthetic data, on CPU, in minutes.

1. synthetic MOTS sources (LiTS, KiTS19, MSD layouts) -> ``convert mots`` -> ``nnUNetv2_plan_and_preprocess``
2. DoDNet-style pretraining with ``nnUNetv2_train -tr MOTSPretrainTrainer`` (a short variant)
3. synthetic KiTS21 (official layout) -> ``convert kits21`` -> ``align-plans`` with the MOTS plans
4. KiTS21 HEC fine-tuning twice through ``nnUNetv2_train``: from scratch, and with ``-pretrained_weights``
5. ``nnUNetv2_predict`` on held-out cases with both models -> ``evaluate kits21`` (Dice and Surface Dice per HEC)
6. a table (scratch vs pretrained) and a PNG of both validation curves

Everything runs through nnU-Net's own commands; the short trainer variants are written into the workspace, the
way nnU-Net users make variants. Sizes and epochs are adjustable; the defaults finish in minutes on 2 CPU cores.
The numbers are those of a tiny synthetic run: they show the pipeline works, not what transfer gains on real data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_transfer.discovery import NNUNET_PATH_VARIABLES
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

MOTS_ID, MOTS_NAME = 990, "Dataset990_DemoMOTS"
KITS_ID, KITS_NAME = 991, "Dataset991_DemoKiTS21"
ALIGNED_PLANS = f"nnUNetPlans_from{MOTS_ID}"
MOTS_TRAINER = "MOTSPretrainTrainer_demo"
SCRATCH_TRAINER = "KiTS21HECTrainer_demoScratch"
PRETRAINED_TRAINER = "KiTS21HECTrainer_demoPretrained"


@dataclass
class DemoConfig:
    workspace: Optional[Path] = None
    cases: int = 3  # per MOTS source
    kits_cases: int = 10
    epochs: int = 4
    iterations: int = 20
    seed: int = 0
    shape: tuple = (16, 48, 48)


def default_workspace() -> Optional[Path]:
    """The user's nnU-Net folders when all three variables are set (None: pick ./nnunet_workspace)."""
    values = [os.environ.get(v) for v in NNUNET_PATH_VARIABLES]
    if all(values) and len({str(Path(v).parent) for v in values}) == 1:
        return Path(values[0]).parent
    return None


def _training_progress(line: str) -> bool:
    """nnU-Net log lines worth showing while a training runs."""
    return any(key in line for key in (": Epoch ", "train_loss", "Pseudo dice per task", "Yayy", "predicting "))


class _Progress:
    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.time()

    def __call__(self, message: str) -> None:
        self.step += 1
        print(f"[demo {self.step}/{self.total} | {time.time() - self.started:5.0f} s] {message}", flush=True)


def _validation_curve(fold_folder: Path) -> List[float]:
    """EMA pseudo Dice per epoch from an nnU-Net checkpoint (read as data only)."""
    from nnunet_transfer.pretrained.safe_load import read_checkpoint_file

    checkpoint = read_checkpoint_file(fold_folder / "checkpoint_final.pth")
    return [float(v) for v in checkpoint["logging"]["ema_fg_dice"]]


def _plot_curves(curves: Dict[str, List[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", linewidth=2, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo Dice (EMA)")
    ax.set_title("KiTS21 HEC fine-tuning on synthetic data")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparison_table(results: Dict[str, dict]) -> str:
    """Mean Dice / Surface Dice per HEC, one row per model."""
    from nnunet_transfer.evaluation.kits import HECS

    header = f"{'model':<12}" + "".join(f"{h + ' Dice':>22}{h + ' SD':>20}" for h in HECS)
    rows = [header]
    for label, result in results.items():
        cells = "".join(f"{result['mean'][h]['dice']:>22.4f}{result['mean'][h]['surface_dice']:>20.4f}" for h in HECS)
        rows.append(f"{label:<12}{cells}")
    return "\n".join(rows)


def run_demo(config: DemoConfig) -> dict:
    """Run the pipeline; returns paths and the two evaluation results."""
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    root = Path(config.workspace) if config.workspace else (default_workspace() or Path.cwd() / "nnunet_workspace")
    ws = NnUNetWorkspace(root)
    progress = _Progress(9)
    print(f"[demo] workspace: {ws.root} (nnU-Net folders inside; commands logged to {ws.log_file})")
    short = dict(epochs=config.epochs, iterations=config.iterations, val_iterations=2)
    ws.write_trainers("demo_trainers", [
        trainer_variant_source(MOTS_TRAINER, "MOTSPretrainTrainer", **short),
        trainer_variant_source(SCRATCH_TRAINER, "KiTS21HECTrainer", **short),
        trainer_variant_source(PRETRAINED_TRAINER, "KiTS21HECTrainer", **short),
    ])
    shape = [str(s) for s in config.shape]

    progress(f"synthetic MOTS sources ({config.cases} cases x 7 sources) and conversion")
    ws.cli("synth", "mots", ws.root / "sources" / "MOTS", "--cases", config.cases, "--seed", config.seed,
           "--shape", *shape)
    ws.cli("convert", "mots", ws.root / "sources" / "MOTS", "-d", MOTS_ID, "--name", "DemoMOTS")

    progress("nnUNetv2_plan_and_preprocess for MOTS")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MOTS_ID, "-c", "3d_fullres", "-np", "2")

    progress(f"MOTS pretraining: nnUNetv2_train {MOTS_ID} 3d_fullres 0 -tr {MOTS_TRAINER} -device cpu")
    ws.train(MOTS_ID, "3d_fullres", "0", MOTS_TRAINER, echo=_training_progress)
    mots_checkpoint = ws.model_folder(MOTS_NAME, MOTS_TRAINER, "3d_fullres") / "fold_0" / "checkpoint_final.pth"

    progress(f"synthetic KiTS21 ({config.kits_cases} cases, official layout), conversion, align-plans")
    ws.cli("synth", "kits21", ws.root / "sources" / "kits21", "--cases", config.kits_cases, "--seed",
           config.seed + 1, "--shape", *shape)
    ws.cli("convert", "kits21", ws.root / "sources" / "kits21", "-d", KITS_ID, "--name", "DemoKiTS21")
    ws.cli("align-plans", "-s", MOTS_ID, "-t", KITS_ID, "-tp", ALIGNED_PLANS)

    progress("transfer-check (dry run of the weight transfer)")
    print(ws.cli("transfer-check", mots_checkpoint, "-d", KITS_ID, "-tr", PRETRAINED_TRAINER, "-p", ALIGNED_PLANS))

    progress("KiTS21 HEC fine-tuning from scratch")
    ws.train(KITS_ID, "3d_fullres", "0", SCRATCH_TRAINER, plans=ALIGNED_PLANS, echo=_training_progress)

    progress("KiTS21 HEC fine-tuning from the MOTS weights (-pretrained_weights)")
    ws.train(KITS_ID, "3d_fullres", "0", PRETRAINED_TRAINER, "-pretrained_weights", str(mots_checkpoint),
             plans=ALIGNED_PLANS, echo=_training_progress)

    progress("nnUNetv2_predict on the held-out fold-0 validation cases, both models")
    splits = json.loads((ws.preprocessed / KITS_NAME / "splits_final.json").read_text())
    held_out = splits[0]["val"]
    images_in, references = ws.root / "demo_eval" / "images", ws.root / "demo_eval" / "references"
    shutil.rmtree(ws.root / "demo_eval", ignore_errors=True)
    images_in.mkdir(parents=True)
    references.mkdir(parents=True)
    for case in held_out:
        shutil.copy(ws.raw / KITS_NAME / "imagesTr" / f"{case}_0000.nii.gz", images_in)
        shutil.copy(ws.raw / KITS_NAME / "labelsTr" / f"{case}.nii.gz", references)
    results, curves = {}, {}
    for label, trainer in (("scratch", SCRATCH_TRAINER), ("pretrained", PRETRAINED_TRAINER)):
        out = ws.root / "demo_eval" / f"pred_{label}"
        ws.predict(images_in, out, KITS_ID, "3d_fullres", trainer, ["0"], plans=ALIGNED_PLANS)
        results[label] = evaluate_kits21(out, references, output_json=out / "kits_metrics.json")
        curves[label] = _validation_curve(ws.model_folder(KITS_NAME, trainer, "3d_fullres", ALIGNED_PLANS) / "fold_0")

    progress("results")
    plot = ws.root / "demo_validation_curves.png"
    _plot_curves(curves, plot)
    table = comparison_table(results)
    print(table)
    report = ws.model_folder(KITS_NAME, PRETRAINED_TRAINER, "3d_fullres", ALIGNED_PLANS) / "fold_0" / \
        "transfer_report.txt"
    print(f"validation curves: {plot}\ntransfer report: {report}\n"
          "(tiny synthetic run on CPU: the numbers show the pipeline works, not the benefit on real data)")
    return {"workspace": ws.root, "results": results, "curves": curves, "plot": plot, "table": table,
            "transfer_report": report}
