"""The CPU-scale comparisons of the paper recipes (``recipe run NAME --scale tiny|demo``), on generated data.

Each function runs one paper's comparison through the real commands (``nnunet-transfer synth/convert/...`` and
``nnUNetv2_*`` as subprocesses, via the workspace), every arm with the same data, plans, budget and seeds, and
returns the scored runs::

    {condition: {arm: [{"seed": s, "mean": {structure: {metric: value}}}, ...]}}

(``condition`` is ``"all"`` except for the localisation recipe, whose conditions are the numbers of labelled
cases). The budgets come from the recipe catalogue (:mod:`nnunet_transfer.recipes.catalog`); the kits21-dodnet
comparison is the demo (:func:`nnunet_transfer.recipes.demo.run_demo`).
"""

from __future__ import annotations

import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from nnunet_transfer.recipes.demo import demo_splits, held_out_folders, predict_folder, write_demo_plans
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

Runs = Dict[str, Dict[str, List[dict]]]

KITS_ID, KITS_NAME = 992, "Dataset992_RecipeKiTS21"
LOC_ID, LOC_NAME = 995, "Dataset995_RecipeLocaliser"
MED3D_MOTS_ID, MED3D_MOTS_NAME = 993, "Dataset993_RecipeMed3DMOTS"
MED3D_KITS_ID, MED3D_KITS_NAME = 994, "Dataset994_RecipeMed3DKiTS21"
SRC2D_ID, SRC2D_NAME = 996, "Dataset996_RecipeGreyModality"
KVASIR_ID, KVASIR_NAME = 997, "Dataset997_RecipeKvasir"
DEMO_PLANS = "nnUNetDemoPlans"

#: a variant body that gives AttentionUNetTrainer (Adam 1e-4, L2, its loss) nnU-Net's plain U-Net: the "without
#: gates" arm of the attention recipe, everything else equal
NO_GATES_BODY = '''
@staticmethod
def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                               enable_deep_supervision=True):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(configuration_manager.network_arch_class_name,
                                  configuration_manager.network_arch_init_kwargs,
                                  configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                  num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)
'''


def plans_copy(preprocessed_dataset: Path, source: str, target: str) -> None:
    """The same plans (and preprocessed data) under another name, to carry a pretrained-weights record."""
    plans = json.loads((preprocessed_dataset / f"{source}.json").read_text())
    plans["plans_name"] = target  # nnU-Net names the model folder after this field
    (preprocessed_dataset / f"{target}.json").write_text(json.dumps(plans, indent=2))


def _shape(p: Mapping) -> List[str]:
    return [str(s) for s in p["shape"]]


def _variant(name: str, base: str, p: Mapping, seed: int, body: str = "", **kwargs) -> str:
    return trainer_variant_source(name, base, epochs=p["epochs"], iterations=p["iterations"], val_iterations=1,
                                  seed=seed, final_validation=False, body=body, **kwargs)


def _pretrain_variant(name: str, base: str, p: Mapping, seed: int, **kwargs) -> str:
    return trainer_variant_source(name, base, epochs=p["pretrain_epochs"], iterations=p["pretrain_iterations"],
                                  val_iterations=1, seed=seed, final_validation=False, **kwargs)


def compare_arms(ws: NnUNetWorkspace, dataset: int, name: str, configuration: str, fold: int,
                 arms: Mapping[str, Tuple[str, str, str]], seeds: Sequence[int], p: Mapping, images: Path,
                 score: Callable[[Path], dict], tag: str) -> Dict[str, List[dict]]:
    """Train every arm (``arm -> (base trainer, plans, variant body)``) per seed with the same budget; score each
    arm's prediction of the held-out images."""
    def trainer(arm: str, seed: int) -> str:
        return f"{arms[arm][0]}_{tag}{arm.replace('-', '').capitalize()}_seed{seed}"

    ws.write_trainers(f"recipe_{tag}", [_variant(trainer(arm, seed), base, p, seed, body)
                                                   for seed in seeds for arm, (base, _, body) in arms.items()])
    runs: Dict[str, List[dict]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm, (_, plans, _) in arms.items():
            ws.train(dataset, configuration, str(fold), trainer(arm, seed), plans=plans)
            out = ws.root / f"pred_{tag}" / f"fold{fold}_{arm}_seed{seed}"
            with ws.log_file.open("a") as log, redirect_stdout(log):
                predict_folder(ws, ws.model_folder(name, trainer(arm, seed), configuration, plans), fold, images, out)
                result = score(out)
            runs[arm].append({"seed": seed, "mean": result})
            print(f"    {arm}, seed {seed}: " + ", ".join(f"{s} {m['dice']:.3f}" for s, m in result.items()),
                  flush=True)
    return runs


def write_splits_without_leakage(ws: NnUNetWorkspace, source: int, target: int, splits: List[dict],
                                 test: Sequence[str]) -> None:
    """The target's splits_final.json from ``splits`` with every case whose image the source dataset holds moved to
    training (image content compared, :mod:`nnunet_transfer.data.leakage`), and the leakage record the
    fine-tuning trainers read. A held-out ``test`` case the source holds is an error (it would be scored)."""
    from nnunet_transfer.discovery import NNUNET_PATH_VARIABLES, environment_variables
    from nnunet_transfer.data.leakage import avoid_leakage

    with environment_variables({k: ws.env[k] for k in NNUNET_PATH_VARIABLES}):
        overlap, path = avoid_leakage(source, target, splits=splits)
    print(f"    leakage check {source} -> {target}: {len(overlap.pairs)} shared case(s); splits: {path}", flush=True)
    scored = sorted(set(overlap.pairs) & set(test))
    if scored:
        raise RuntimeError(f"held-out case(s) {scored} of dataset {target} are among the pretraining images of "
                           f"dataset {source}: their scores would overstate the transfer")


def _kits_score(references: Path) -> Callable[[Path], dict]:
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    return lambda out: evaluate_kits21(out, references)["mean"]


def _synth_kits21(ws: NnUNetWorkspace, dataset: int, name: str, cases: int, seed: int, p: Mapping) -> None:
    ws.cli("synth", "kits21", ws.root / f"sources_{dataset}" / "kits21", "--cases", cases, "--seed", seed,
           "--shape", *_shape(p))
    ws.cli("convert", "kits21", ws.root / f"sources_{dataset}" / "kits21", "-d", dataset, "--name", name,
           "--force")


def _kits_ids(cases: int) -> List[str]:
    from nnunet_transfer.data.synthetic import kits_case_ids

    return [f"case_{c:05d}" for c in kits_case_ids(cases)]


# ---------------------------------------------------------------------------------------------------- recipes


def mleam_prostate(ws: NnUNetWorkspace, seeds: Sequence[int], p: Mapping) -> Runs:
    """MLEAM decoder with and without edge supervision (edge-loss weights 0.5, 0.8, 1.0 vs 0), same network, plans,
    data and budget. Generated volumes in the KiTS21 layout stand in for PROMISE12 (no prostate generator): the
    kidney-and-masses region is the foreground that is scored."""
    total = p["labelled"] + 1 + p["test_cases"]
    _synth_kits21(ws, KITS_ID, "RecipeKiTS21", total, p["data_seed"], p)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", KITS_ID, "-c", "3d_fullres", "-np", "2")
    write_demo_plans(ws.preprocessed / KITS_NAME, p["base_features"], p["max_features"],
                     patch_size=p.get("patch_size"))
    ws.cli("plan-arch", "-d", KITS_ID, "-a", "plain", "--decoder", "mleam", "-sp", DEMO_PLANS, "-p",
           "nnUNetDemoPlans_mleam", "--no-preprocess")
    splits, test = demo_splits(_kits_ids(total), [p["labelled"]], 1, p["test_cases"])
    (ws.preprocessed / KITS_NAME / "splits_final.json").write_text(json.dumps(splits, indent=2))
    images, references = held_out_folders(ws.raw / KITS_NAME, test, ws.root / "test")
    arms = {"edge": ("MLEAMTrainer", "nnUNetDemoPlans_mleam", ""),
            "no-edge": ("MLEAMTrainer", "nnUNetDemoPlans_mleam", "edge_loss_weights = (0.0, 0.0, 0.0)")}
    return {"all": compare_arms(ws, KITS_ID, KITS_NAME, "3d_fullres", 0, arms, seeds, p, images,
                                _kits_score(references), "mleam")}


def med3d(ws: NnUNetWorkspace, seeds: Sequence[int], p: Mapping) -> Runs:
    """Med3D's own pretraining (a shared ResNet encoder, one 1x1x1 branch per source dataset) on generated MOTS
    sources -> the encoder as a MedicalNet file -> ``plan-arch --weights`` on KiTS21 -> Med3D fine-tuning; the scratch
    arm is the same trainer and plans without the weights record."""
    depth = p["depth"]
    arch = f"med3d-resnet{depth}"
    pretrain_plans, scratch_plans, pretrained_plans = "nnUNetPlans_med3dPretrain", "nnUNetPlans_med3d", \
        "nnUNetPlans_med3dPretrained"
    ws.cli("synth", "mots", ws.root / "sources" / "MOTS", "--cases", p["mots_cases"], "--seed", p["data_seed"],
           "--shape", *_shape(p))
    ws.cli("convert", "mots", ws.root / "sources" / "MOTS", "-d", MED3D_MOTS_ID, "--name", "RecipeMed3DMOTS",
           "--force")
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MED3D_MOTS_ID, "-c", "3d_fullres", "-np", "2")
    ws.cli("plan-arch", "-d", MED3D_MOTS_ID, "-a", arch, "-p", pretrain_plans, "--no-preprocess")
    trainer = "Med3DPretrainTrainer_recipe"
    ws.write_trainers("recipe_med3d_pretrain", [_pretrain_variant(trainer, "Med3DPretrainTrainer", p, seeds[0])])
    ws.train(MED3D_MOTS_ID, "3d_fullres", "0", trainer, plans=pretrain_plans)
    encoder = ws.model_folder(MED3D_MOTS_NAME, trainer, "3d_fullres", pretrain_plans) / "fold_0" / \
        f"med3d_resnet{depth}_encoder_medicalnet.pth"

    total = p["labelled"] + 1 + p["test_cases"]
    _synth_kits21(ws, MED3D_KITS_ID, "RecipeMed3DKiTS21", total, p["data_seed"] + 1, p)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MED3D_KITS_ID, "-c", "3d_fullres", "-np", "2")
    ws.cli("plan-arch", "-d", MED3D_KITS_ID, "-a", arch, "-p", scratch_plans, "--no-preprocess")
    ws.cli("plan-arch", "-d", MED3D_KITS_ID, "-a", arch, "--weights", encoder, "-p", pretrained_plans,
           "--no-preprocess")
    splits, test = demo_splits(_kits_ids(total), [p["labelled"]], 1, p["test_cases"])
    write_splits_without_leakage(ws, MED3D_MOTS_ID, MED3D_KITS_ID, splits, test)
    images, references = held_out_folders(ws.raw / MED3D_KITS_NAME, test, ws.root / "test")
    arms = {"scratch": ("Med3DFinetuneTrainer", scratch_plans, ""),
            "med3d": ("Med3DFinetuneTrainer", pretrained_plans, "")}
    return {"all": compare_arms(ws, MED3D_KITS_ID, MED3D_KITS_NAME, "3d_fullres", 0, arms, seeds, p, images,
                                _kits_score(references), "med3d")}


def localization(ws: NnUNetWorkspace, seeds: Sequence[int], p: Mapping) -> Runs:
    """Localiser (centre regression on many cases: centre labels are cheap) -> frozen-encoder segmentation on few
    labelled cases, per number of labelled cases; the scratch arm is the same trainer with a trainable, randomly
    initialised encoder."""
    labelled = sorted(p["labelled"])
    total = p["localiser_cases"] + 1 + p["test_cases"]
    if max(labelled) > p["localiser_cases"]:
        raise ValueError("the labelled cases are a subset of the localiser's cases")
    _synth_kits21(ws, LOC_ID, "RecipeLocaliser", total, p["data_seed"], p)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", LOC_ID, "-c", "3d_fullres", "-np", "2")
    pre = ws.preprocessed / LOC_NAME
    write_demo_plans(pre, p["base_features"], p["max_features"])
    # fold 0: the localiser's cases; fold i: the first labelled[i - 1] of them (nested subsets)
    splits, test = demo_splits(_kits_ids(total), [p["localiser_cases"], *labelled], 1, p["test_cases"])
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))
    trainer = "LocalizationPretrainTrainer_recipe"
    ws.write_trainers("recipe_localiser_pretrain", [_pretrain_variant(trainer, "LocalizationPretrainTrainer", p,
                                                                      seeds[0])])
    ws.train(LOC_ID, "3d_fullres", "0", trainer, plans=DEMO_PLANS)
    localiser = ws.model_folder(LOC_NAME, trainer, "3d_fullres", DEMO_PLANS) / "fold_0" / "checkpoint_final.pth"
    plans_copy(pre, DEMO_PLANS, "nnUNetDemoPlans_loc")
    ws.cli("set-pretrained", localiser, "-d", LOC_ID, "-p", "nnUNetDemoPlans_loc")
    images, references = held_out_folders(ws.raw / LOC_NAME, test, ws.root / "test")
    arms = {"scratch": ("FrozenEncoderTrainer", DEMO_PLANS, "freeze_encoder = False"),
            "localisation-pretrained": ("FrozenEncoderTrainer", "nnUNetDemoPlans_loc", "")}
    return {str(n): compare_arms(ws, LOC_ID, LOC_NAME, "3d_fullres", fold, arms, seeds, p, images,
                                 _kits_score(references), "loc")
            for fold, n in enumerate(labelled, start=1)}


def _grey_modality(kvasir_dir: Path, out_dir: Path) -> None:
    """Another 'modality' for the 2D source: the generated endoscopy images as inverted grayscale."""
    from PIL import Image, ImageOps

    shutil.copytree(kvasir_dir, out_dir, dirs_exist_ok=True)
    for f in (out_dir / "images").glob("*.jpg"):
        ImageOps.invert(Image.open(f).convert("L")).convert("RGB").save(f, quality=90)


def dice_iou(prediction: np.ndarray, reference: np.ndarray) -> Tuple[float, float]:
    """Dice and IoU of two binary masks (both empty: 1, 1)."""
    intersection = float(np.logical_and(prediction, reference).sum())
    total = float(prediction.sum() + reference.sum())
    union = total - intersection
    return (2 * intersection / total, intersection / union) if total else (1.0, 1.0)


def attention_polyp(ws: NnUNetWorkspace, seeds: Sequence[int], p: Mapping) -> Runs:
    """A plain 2D U-Net trained on another modality (inverted grayscale, standing in for the brain-MRI U-Net) ->
    Kvasir-layout polyps, scratch vs those weights, with and without attention gates (AttentionUNetTrainer and the
    same trainer on nnU-Net's gate-free U-Net)."""
    from PIL import Image

    size = [str(s) for s in p["image_size"]]
    if p["source_images"] < 5:
        raise ValueError("the source U-Net trains on fold 0 of nnU-Net's default 5 folds: give >= 5 source images")
    ws.cli("synth", "kvasir", ws.root / "grey_src_rgb", "--cases", p["source_images"], "--seed", p["data_seed"],
           "--shape", *size)
    _grey_modality(ws.root / "grey_src_rgb", ws.root / "grey_src")
    ws.cli("convert", "kvasir", ws.root / "grey_src", "-d", SRC2D_ID, "--name", "RecipeGreyModality", "--force")
    total = p["labelled"] + 1 + p["test_cases"]
    ws.cli("synth", "kvasir", ws.root / "Kvasir-SEG", "--cases", total, "--seed", p["data_seed"] + 1,
           "--shape", *size)
    ws.cli("convert", "kvasir", ws.root / "Kvasir-SEG", "-d", KVASIR_ID, "--name", "RecipeKvasir", "--force")
    for dataset in (SRC2D_ID, KVASIR_ID):
        ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "2d", "-np", "2")
    ws.write_trainers("recipe_attention_source", [_pretrain_variant(
        "nnUNetTrainer_recipeSource", "nnUNetTrainer", p, seeds[0],
        base_module="nnunetv2.training.nnUNetTrainer.nnUNetTrainer")])
    ws.train(SRC2D_ID, "2d", "0", "nnUNetTrainer_recipeSource")
    source = ws.model_folder(SRC2D_NAME, "nnUNetTrainer_recipeSource", "2d") / "fold_0" / "checkpoint_final.pth"
    pre = ws.preprocessed / KVASIR_NAME
    ids = sorted(f.name[:-len(".png")] for f in (ws.raw / KVASIR_NAME / "labelsTr").glob("*.png"))
    splits, test = demo_splits(ids, [p["labelled"]], 1, p["test_cases"])
    write_splits_without_leakage(ws, SRC2D_ID, KVASIR_ID, splits, test)
    plans_copy(pre, "nnUNetPlans", "nnUNetPlans_grey")
    ws.cli("set-pretrained", source, "-d", KVASIR_ID, "-c", "2d", "-p", "nnUNetPlans_grey")
    images, references = held_out_folders(ws.raw / KVASIR_NAME, test, ws.root / "test", file_ending=".png")

    def score(out: Path) -> dict:  # every held-out image has a polyp
        values = [dice_iou(np.asarray(Image.open(out / f"{case}.png")) > 0,
                           np.asarray(Image.open(references / f"{case}.png")) > 0) for case in test]
        return {"polyp": {"dice": float(np.mean([v[0] for v in values])),
                          "iou": float(np.mean([v[1] for v in values]))}}

    arms = {"scratch-gates": ("AttentionUNetTrainer", "nnUNetPlans", ""),
            "pretrained-gates": ("AttentionUNetTrainer", "nnUNetPlans_grey", ""),
            "scratch-no-gates": ("AttentionUNetTrainer", "nnUNetPlans", NO_GATES_BODY),
            "pretrained-no-gates": ("AttentionUNetTrainer", "nnUNetPlans_grey", NO_GATES_BODY)}
    return {"all": compare_arms(ws, KVASIR_ID, KVASIR_NAME, "2d", 0, arms, seeds, p, images, score, "att")}


def kits21_dodnet(ws: NnUNetWorkspace, seeds: Sequence[int], p: Mapping) -> Runs:
    """The demo (MOTS pretraining -> KiTS21 HEC fine-tuning, scratch vs pretrained) at the scale's budget; no
    ``seeds``: the demo's own."""
    from nnunet_transfer.recipes.demo import DemoConfig, run_demo

    config = DemoConfig(workspace=ws.root, **({"seeds": tuple(seeds)} if seeds else {}), **p)
    result = run_demo(config)["results"]
    return {"all": {"scratch": result["scratch"], "pretrained": result["pretrained"]}}


COMPARISONS: Dict[str, Callable[[NnUNetWorkspace, Sequence[int], Mapping], Runs]] = {
    "kits21-dodnet": kits21_dodnet, "mleam-prostate": mleam_prostate, "med3d": med3d, "localization": localization,
    "attention-polyp": attention_polyp,
}
