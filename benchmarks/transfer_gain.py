"""Benchmark: scratch vs pretrained, same budget and seeds, for every recipe the project can pretrain itself.

* ``mots-kits21`` (paper kits21-dodnet-transfer): the demo's MOTS pretraining -> KiTS21 HEC fine-tuning;
  kidney_and_mass / mass / tumor Dice on held-out synthetic KiTS21 cases.
* ``localiser`` (paper localization-pretraining): ``LocalizationPretrainTrainer`` (centre regression) on many
  synthetic KiTS21 cases -> ``FrozenEncoderTrainer`` segmentation on few labelled cases; the scratch side is the same
  trainer with a trainable, randomly initialised encoder. kidney_and_mass Dice on held-out cases.
* ``med3d`` (paper med3d): ``Med3DPretrainTrainer`` (a shared Med3D ResNet-10 encoder, one 1x1x1 branch per
  source dataset) on the synthetic MOTS datasets -> the encoder in MedicalNet's file format -> ``plan-arch --weights``
  on KiTS21 -> ``Med3DFinetuneTrainer``; the scratch side is the same plans without the weights record.
  kidney_and_mass / mass / tumor Dice on held-out synthetic KiTS21 cases.
* ``attention`` (paper attention-unet-finetuning): a 2D plain U-Net trained on a grayscale synthetic modality ->
  ``AttentionUNetTrainer`` on Kvasir-style RGB images (1 -> 3 input channels adapted, gates new); polyp Dice on
  held-out images.

Every fine-tuning runs through ``nnUNetv2_train`` with a seeded trainer variant (same seed, same numbers); the two
sides of a recipe share plans, data, epochs, iterations and seeds. Prints mean +- sd over seeds, the paired
difference and wall time per recipe, and writes ``transfer_gain.json``.

    python benchmarks/transfer_gain.py --workspace /tmp/gain                     # all recipes, 3 seeds
    python benchmarks/transfer_gain.py --recipes localiser --seeds 0 1 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from nnunet_transfer.recipes.demo import (DemoConfig, MODELS, comparison_table, demo_splits, held_out_folders,
                                  predict_folder, run_demo, summarise, write_demo_plans)
from nnunet_transfer.evaluation.dodnet import dice
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

LOC_ID, LOC_NAME = 995, "Dataset995_GainLocaliser"
MED3D_MOTS_ID, MED3D_MOTS_NAME = 993, "Dataset993_GainMed3DMOTS"
MED3D_KITS_ID, MED3D_KITS_NAME = 994, "Dataset994_GainMed3DKiTS21"
SRC2D_ID, SRC2D_NAME = 996, "Dataset996_GainGreyModality"
KVASIR_ID, KVASIR_NAME = 997, "Dataset997_GainKvasir"


def _plans_copy(preprocessed_dataset: Path, source: str, target: str) -> None:
    """The same plans (and preprocessed data) under another name, to carry a pretrained-weights record."""
    plans = json.loads((preprocessed_dataset / f"{source}.json").read_text())
    plans["plans_name"] = target  # nnU-Net names the model folder after this field
    (preprocessed_dataset / f"{target}.json").write_text(json.dumps(plans, indent=2))


def _compare(ws: NnUNetWorkspace, dataset: int, name: str, configuration: str, fold: int, trainer_base: str,
             plans: Dict[str, str], seeds: Sequence[int], epochs: int, iterations: int, images: Path,
             score: Callable[[Path], dict], body: Dict[str, str], tag: str) -> Dict[str, List[dict]]:
    """Train scratch and pretrained (plans[model] carries or lacks the pretrained record) per seed; score each."""
    variants, runs = [], {m: [] for m in MODELS}
    for seed in seeds:
        for model in MODELS:
            variants.append(trainer_variant_source(f"{trainer_base}_{tag}{model.capitalize()}_seed{seed}",
                                                   trainer_base, epochs=epochs, iterations=iterations,
                                                   val_iterations=2, seed=seed, final_validation=False,
                                                   body=body.get(model, "")))
    ws.write_trainers(f"gain_{tag}", variants)
    for seed in seeds:
        for model in MODELS:
            trainer = f"{trainer_base}_{tag}{model.capitalize()}_seed{seed}"
            print(f"[{tag}] {model}, seed {seed}: nnUNetv2_train {dataset} {configuration} {fold} -tr {trainer} "
                  f"-p {plans[model]}", flush=True)
            ws.train(dataset, configuration, str(fold), trainer, plans=plans[model])
            out = ws.root / f"pred_{tag}" / f"{model}_seed{seed}"
            with ws.log_file.open("a") as log, redirect_stdout(log):
                predict_folder(ws, ws.model_folder(name, trainer, configuration, plans[model]), fold, images, out)
                result = score(out)
            runs[model].append({"seed": seed, "mean": result})
            print(f"    {json.dumps({k: round(v['dice'], 3) for k, v in result.items()})}", flush=True)
    return runs


def recipe_mots_kits21(root: Path, seeds: Sequence[int], epochs: int, iterations: int,
                       pretrain: Tuple[int, int]) -> Dict[str, List[dict]]:
    config = DemoConfig(workspace=root / "mots_kits21", seeds=tuple(seeds), epochs=epochs, iterations=iterations,
                        pretrain_epochs=pretrain[0], pretrain_iterations=pretrain[1])
    result = run_demo(config)["results"]
    return {m: result[m] for m in MODELS}


def recipe_localiser(root: Path, seeds: Sequence[int], epochs: int, iterations: int,
                     pretrain: Tuple[int, int], localiser_cases: int = 10, labelled: int = 2) -> Dict[str, List[dict]]:
    """Localiser on ``localiser_cases`` cases (centre labels are cheap), segmentation on ``labelled`` of them."""
    from nnunet_transfer.data.synthetic import kits_case_ids
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    config = DemoConfig()
    ws = NnUNetWorkspace(root / "localiser")
    total = localiser_cases + 2 + 6
    ws.cli("synth", "kits21", ws.root / "src", "--cases", total, "--seed", 21, "--shape", *map(str, config.shape))
    ws.cli("convert", "kits21", ws.root / "src", "-d", LOC_ID, "--name", "GainLocaliser")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", LOC_ID, "-c", "3d_fullres", "-np", "2")
    pre = ws.preprocessed / LOC_NAME
    write_demo_plans(pre, config.base_features, config.max_features)
    ids = [f"case_{c:05d}" for c in kits_case_ids(total)]
    splits, test = demo_splits(ids, [localiser_cases, labelled], 2, 6)
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))  # fold 0: localiser, fold 1: few masks
    ws.write_trainers("gain_localiser_pretrain", [trainer_variant_source(
        "LocalizationPretrainTrainer_gain", "LocalizationPretrainTrainer", epochs=pretrain[0], iterations=pretrain[1],
        val_iterations=2, seed=seeds[0], final_validation=False)])
    print("[localiser] pretraining the localiser (centre regression)", flush=True)
    ws.train(LOC_ID, "3d_fullres", "0", "LocalizationPretrainTrainer_gain", plans="nnUNetDemoPlans")
    localiser = ws.model_folder(LOC_NAME, "LocalizationPretrainTrainer_gain", "3d_fullres", "nnUNetDemoPlans") / \
        "fold_0" / "checkpoint_final.pth"
    _plans_copy(pre, "nnUNetDemoPlans", "nnUNetDemoPlans_loc")
    ws.cli("set-pretrained", localiser, "-d", LOC_ID, "-p", "nnUNetDemoPlans_loc")
    images, references = held_out_folders(ws.raw / LOC_NAME, test, ws.root / "test")
    return _compare(ws, LOC_ID, LOC_NAME, "3d_fullres", 1, "FrozenEncoderTrainer",
                    {"scratch": "nnUNetDemoPlans", "pretrained": "nnUNetDemoPlans_loc"}, seeds, epochs, iterations,
                    images, lambda out: evaluate_kits21(out, references)["mean"],
                    {"scratch": "freeze_encoder = False"}, "loc")


def recipe_med3d(root: Path, seeds: Sequence[int], epochs: int, iterations: int,
                 pretrain: Tuple[int, int], depth: int = 10, labelled: int = 6) -> Dict[str, List[dict]]:
    """Med3D's own pretraining on the MOTS datasets, then KiTS21 with the encoder as a MedicalNet file."""
    from nnunet_transfer.data.synthetic import kits_case_ids
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    config = DemoConfig()
    ws = NnUNetWorkspace(root / "med3d")
    arch, shape = f"med3d-resnet{depth}", [str(s) for s in config.shape]
    pretrain_plans, scratch_plans, pretrained_plans = "nnUNetPlans_med3dPretrain", "nnUNetPlans_med3d", \
        "nnUNetPlans_med3dPretrained"
    ws.cli("synth", "mots", ws.root / "MOTS", "--cases", config.mots_cases, "--seed", config.data_seed,
           "--shape", *shape)
    ws.cli("convert", "mots", ws.root / "MOTS", "-d", MED3D_MOTS_ID, "--name", "GainMed3DMOTS")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MED3D_MOTS_ID, "-c", "3d_fullres", "-np", "2")
    ws.cli("plan-arch", "-d", MED3D_MOTS_ID, "-a", arch, "-p", pretrain_plans, "--no-preprocess")
    trainer = "Med3DPretrainTrainer_gain"
    ws.write_trainers("gain_med3d_pretrain", [trainer_variant_source(
        trainer, "Med3DPretrainTrainer", epochs=pretrain[0], iterations=pretrain[1],
        val_iterations=2, seed=seeds[0], final_validation=False)])
    print(f"[med3d] Med3D pretraining ({arch}, one branch per MOTS dataset): {pretrain[0]} epochs x "
          f"{pretrain[1]} iterations", flush=True)
    ws.train(MED3D_MOTS_ID, "3d_fullres", "0", trainer, plans=pretrain_plans)
    encoder = ws.model_folder(MED3D_MOTS_NAME, trainer, "3d_fullres", pretrain_plans) / "fold_0" / \
        f"med3d_resnet{depth}_encoder_medicalnet.pth"

    total = labelled + 2 + 6
    ws.cli("synth", "kits21", ws.root / "kits21", "--cases", total, "--seed", config.data_seed + 1, "--shape", *shape)
    ws.cli("convert", "kits21", ws.root / "kits21", "-d", MED3D_KITS_ID, "--name", "GainMed3DKiTS21")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MED3D_KITS_ID, "-c", "3d_fullres", "-np", "2")
    ws.cli("plan-arch", "-d", MED3D_KITS_ID, "-a", arch, "-p", scratch_plans, "--no-preprocess")
    ws.cli("plan-arch", "-d", MED3D_KITS_ID, "-a", arch, "--weights", encoder, "-p", pretrained_plans,
           "--no-preprocess")
    ids = [f"case_{c:05d}" for c in kits_case_ids(total)]
    splits, test = demo_splits(ids, [labelled], 2, 6)
    (ws.preprocessed / MED3D_KITS_NAME / "splits_final.json").write_text(json.dumps(splits, indent=2))
    images, references = held_out_folders(ws.raw / MED3D_KITS_NAME, test, ws.root / "test")
    return _compare(ws, MED3D_KITS_ID, MED3D_KITS_NAME, "3d_fullres", 0, "Med3DFinetuneTrainer",
                    {"scratch": scratch_plans, "pretrained": pretrained_plans}, seeds, epochs, iterations,
                    images, lambda out: evaluate_kits21(out, references)["mean"], {}, "med3d")


def _grey_modality(kvasir_dir: Path, out_dir: Path) -> None:
    """Another 'modality' for the 2D source: the synthetic endoscopy images as inverted grayscale."""
    from PIL import Image, ImageOps

    shutil.copytree(kvasir_dir, out_dir)
    for f in (out_dir / "images").glob("*.jpg"):
        ImageOps.invert(Image.open(f).convert("L")).convert("RGB").save(f, quality=90)


def recipe_attention(root: Path, seeds: Sequence[int], epochs: int, iterations: int,
                     pretrain: Tuple[int, int], source_images: int = 40, labelled: int = 4) -> Dict[str, List[dict]]:
    from PIL import Image

    ws = NnUNetWorkspace(root / "attention")
    ws.cli("synth", "kvasir", ws.root / "grey_src_rgb", "--cases", source_images, "--seed", 31, "--shape", 64, 64)
    _grey_modality(ws.root / "grey_src_rgb", ws.root / "grey_src")
    ws.cli("convert", "kvasir", ws.root / "grey_src", "-d", SRC2D_ID, "--name", "GainGreyModality")
    total = labelled + 2 + 8
    ws.cli("synth", "kvasir", ws.root / "Kvasir-SEG", "--cases", total, "--seed", 32, "--shape", 64, 64)
    ws.cli("convert", "kvasir", ws.root / "Kvasir-SEG", "-d", KVASIR_ID, "--name", "GainKvasir")
    for dataset in (SRC2D_ID, KVASIR_ID):
        ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "2d", "-np", "2")
    ws.write_trainers("gain_attention_source", [trainer_variant_source(
        "nnUNetTrainer_gainSource", "nnUNetTrainer", base_module="nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
        epochs=pretrain[0], iterations=pretrain[1], val_iterations=2, seed=seeds[0], final_validation=False)])
    print("[attention] pretraining a plain 2D U-Net on the grey modality", flush=True)
    ws.train(SRC2D_ID, "2d", "0", "nnUNetTrainer_gainSource")
    source = ws.model_folder(SRC2D_NAME, "nnUNetTrainer_gainSource", "2d") / "fold_0" / "checkpoint_final.pth"
    pre = ws.preprocessed / KVASIR_NAME
    ids = sorted(p.name[:-len(".png")] for p in (ws.raw / KVASIR_NAME / "labelsTr").glob("*.png"))
    splits, test = demo_splits(ids, [labelled], 2, 8)
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))
    _plans_copy(pre, "nnUNetPlans", "nnUNetPlans_grey")
    ws.cli("set-pretrained", source, "-d", KVASIR_ID, "-c", "2d", "-p", "nnUNetPlans_grey")
    images, references = held_out_folders(ws.raw / KVASIR_NAME, test, ws.root / "test", file_ending=".png")

    def score(out: Path) -> dict:  # every held-out image has a polyp: Dice is defined for each
        values = [dice(np.asarray(Image.open(out / f"{case}.png")) > 0,
                       np.asarray(Image.open(references / f"{case}.png")) > 0) for case in test]
        return {"polyp": {"dice": float(np.mean(values))}}

    return _compare(ws, KVASIR_ID, KVASIR_NAME, "2d", 0, "AttentionUNetTrainer",
                    {"scratch": "nnUNetPlans", "pretrained": "nnUNetPlans_grey"}, seeds, epochs, iterations, images,
                    score, {}, "att")


RECIPES = {"mots-kits21": recipe_mots_kits21, "localiser": recipe_localiser, "med3d": recipe_med3d,
           "attention": recipe_attention}


def main(argv: Sequence[str] | None = None) -> None:
    d = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True, help="a new folder for the runs")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--iterations", type=int, default=d.iterations)
    parser.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs,
                        help="epochs of each recipe's pretraining (default: the demo's)")
    parser.add_argument("--pretrain-iterations", type=int, default=d.pretrain_iterations,
                        help="iterations per pretraining epoch (default: the demo's)")
    args = parser.parse_args(argv)
    root = Path(args.workspace).resolve()
    root.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in args.recipes:
        started = time.time()
        runs = RECIPES[name](root, args.seeds, args.epochs, args.iterations,
                             (args.pretrain_epochs, args.pretrain_iterations))
        summary = summarise(runs)
        report[name] = {"runs": runs, "summary": summary, "wall_seconds": round(time.time() - started, 1),
                        "seeds": args.seeds, "epochs": args.epochs, "iterations": args.iterations,
                        "pretrain_epochs": args.pretrain_epochs, "pretrain_iterations": args.pretrain_iterations}
        print(f"\n== {name}: {len(args.seeds)} seeds, {args.epochs} epochs x {args.iterations} iterations per "
              f"fine-tuning, {report[name]['wall_seconds'] / 60:.1f} min\n{comparison_table(summary)}\n", flush=True)
        (root / "transfer_gain.json").write_text(json.dumps(report, indent=1))
    print(f"results: {root / 'transfer_gain.json'}")


if __name__ == "__main__":
    main()
