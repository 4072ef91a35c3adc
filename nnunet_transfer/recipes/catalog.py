"""The paper recipes as data: one entry per paper, what it compares, where its data comes from, and the exact command
sequence of its published setting (``nnunet-transfer recipe list | show | run``).

Placeholders in the commands, filled by ``show`` (for reading) and by the runner (for running):

* ``{W}``: the run's workspace folder; nnU-Net's folders are ``{W}/nnUNet_raw``, ``{RAW}``, ``{PREPROCESSED}``,
  ``{RESULTS}`` (``show`` prints them as ``$nnUNet_raw`` etc.);
* ``{SRC:name}``: the folder of source dataset ``name`` (``--source name=DIR``, or ``--source ROOT`` holding one
  folder per source name).

``scales`` holds the CPU budgets of ``--scale tiny`` (a smoke run of every step: CI) and ``--scale demo`` (the paper's
comparison on generated data, minutes on a laptop CPU); :mod:`nnunet_transfer.recipes.comparisons` runs them.

Size: about 432 lines, as the five paper recipes are data in one place, so that adding or changing a recipe touches
one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Source:
    """A dataset a recipe needs at paper scale, where to get it, and what the source check looks for."""

    name: str
    what: str
    url: str
    #: glob patterns (relative to the source folder) that must each match at least one file
    expect: Tuple[str, ...]
    how: str = ""


@dataclass(frozen=True)
class Step:
    """One command of the published setting; ``manual`` steps are printed but not run (no command exists)."""

    title: str
    command: str
    manual: bool = False


@dataclass(frozen=True)
class Evaluation:
    """Where the paper-scale run finds an arm's scores: a JSON written by an evaluation step, and its reader."""

    arm: str
    path: str
    #: "kits21" (``evaluate kits21``'s ``mean``) or "nnunet" (``nnUNetv2_evaluate_folder``'s summary.json)
    reader: str
    condition: str = "all"


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str
    paper_file: str
    summary: str
    #: arm key -> what the arm is (the first arm is the baseline of the paired differences)
    arms: Tuple[Tuple[str, str], ...]
    #: the table of the paper's format: "kits21" (Dice and Surface Dice per HEC), "arms" (one row per arm),
    #: "few-label" (one row per number of labelled cases)
    table: str
    #: (structure, metric, column title) of the table
    columns: Tuple[Tuple[str, str, str], ...]
    sources: Tuple[Source, ...]
    steps: Tuple[Step, ...]
    evaluations: Tuple[Evaluation, ...]
    scales: Mapping[str, Mapping[str, object]]
    #: default seeds per scale (``--seeds`` overrides)
    seeds: Mapping[str, Tuple[int, ...]]
    notes: Tuple[str, ...] = field(default=())

    @property
    def arm_names(self) -> Tuple[str, ...]:
        return tuple(a for a, _ in self.arms)


KITS_HECS = (("kidney_and_mass", "dice", "Dice_kidney"), ("mass", "dice", "Dice_masses"),
             ("tumor", "dice", "Dice_tumor"), ("kidney_and_mass", "surface_dice", "SD_kidney"),
             ("mass", "surface_dice", "SD_masses"), ("tumor", "surface_dice", "SD_tumor"))

_KITS21_GRID = "0.78125 0.78125 0.78125"

KITS21_DODNET = Recipe(
    name="kits21-dodnet",
    paper="Transfer learning for KiTS21 Challenge (DoDNet/MOTS pretraining -> KiTS21)",
    paper_file="kits21-dodnet-transfer",
    summary="pretrain a residual U-Net + ASPP with DoDNet's dynamic head on the 7 partially labelled MOTS datasets, "
            "fine-tune on the 210 KiTS19 cases of KiTS21 (MOTS's own kidney split, 168 train / 42 validation) with "
            "the HEC loss for 100 epochs; compare with nnU-Net trained from scratch on the same plans",
    arms=(("scratch", "nnU-Net baseline: nnUNetTrainer_100epochs from scratch, same plans (demo: the HEC trainer "
                      "from scratch)"),
          ("pretrained", "transfer: KiTS21HECTrainer_100epochs from the MOTS weights")),
    table="kits21", columns=KITS_HECS,
    sources=(
        Source("MOTS", "the 7 MOTS datasets (LiTS, KiTS19, MSD Task06/07/08/09/10) in DoDNet's folder layout",
               "https://github.com/jianpengz/DoDNet (dataset/ and its load_mots.sh); LiTS: "
               "https://competitions.codalab.org/competitions/17094; KiTS19: https://github.com/neheller/kits19; "
               "MSD: http://medicaldecathlon.com/",
               ("*/*",), "one folder per task (LiTS/ or 0Liver/, KiTS19/ or 1Kidney/origin/, Task08_HepaticVessel/ ...)"),
        Source("MOTS_lists", "DoDNet's MOTS split lists MOTS_train.txt and MOTS_test.txt (920 + 235 cases)",
               "https://github.com/jianpengz/DoDNet/tree/main/dataset/list/MOTS",
               ("MOTS_train.txt", "MOTS_test.txt")),
        Source("kits21", "a clone of the KiTS21 repository with the imaging downloaded and the sampled segmentations "
                         "generated", "https://github.com/neheller/kits21 (python kits21/data/get_imaging.py; "
                                      "python kits21/annotation/sample_segmentations.py)",
               ("kits21/data/case_00000/imaging.nii.gz",)),
    ),
    steps=(
        Step("MOTS -> nnU-Net (DoDNet's train/test split)",
             "nnunet-transfer convert mots {SRC:MOTS} -d 600 --name MOTS --split {SRC:MOTS_lists}/MOTS_train.txt"),
        Step("fingerprint", "nnUNetv2_extract_fingerprint -d 600 -np 8"),
        Step("the paper's network and preprocessing: residual U-Net + ASPP (4 downsamplings, blocks 2-3-5-2), "
             "0.78125 mm isotropic, 128^3 patches",
             f"nnunet-transfer plan -d 600 -pl ResUNetASPPPaperPlanner --spacing {_KITS21_GRID} "
             "--patch-size 128 128 128 --preprocess -np 8"),
        Step("DoDNet pretraining on MOTS (dynamic head; SGD 0.99, lr 1e-2 poly, 1000 epochs)",
             "nnUNetv2_train 600 3d_fullres all -tr MOTSPretrainTrainer -p nnUNetResUNetASPPPaperPlans"),
        Step("KiTS21 -> nnU-Net, only the 210 KiTS19 cases MOTS overlaps (as the paper fine-tunes)",
             "nnunet-transfer convert kits21 {SRC:kits21} -d 601 --name KiTS21 --only-mots-overlap"),
        Step("the MOTS plans on KiTS21 + MOTS's own kidney split (168 train / 42 validation, no case of the "
             "pretraining validated on), leakage checked",
             "nnunet-transfer align-plans -s 600 -t 601 -sp nnUNetResUNetASPPPaperPlans "
             "--mots-split {SRC:MOTS_lists}/MOTS_train.txt -np 8"),
        Step("nnU-Net baseline: 100 epochs from scratch, same plans",
             "nnUNetv2_train 601 3d_fullres 0 -tr nnUNetTrainer_100epochs -p nnUNetResUNetASPPPaperPlans_from600"),
        Step("transfer: HEC loss (BCE on kidney+masses x0.1, masses x0.3), 100 epochs from the MOTS weights",
             "nnUNetv2_train 601 3d_fullres 0 -tr KiTS21HECTrainer_100epochs -p nnUNetResUNetASPPPaperPlans_from600 "
             "-pretrained_weights {RESULTS}/Dataset600_MOTS/MOTSPretrainTrainer__nnUNetResUNetASPPPaperPlans__"
             "3d_fullres/fold_all/checkpoint_final.pth"),
        Step("score the baseline's 42 validation cases with the official KiTS21 metrics (sampled annotations)",
             "nnunet-transfer evaluate kits21 {RESULTS}/Dataset601_KiTS21/nnUNetTrainer_100epochs__"
             "nnUNetResUNetASPPPaperPlans_from600__3d_fullres/fold_0/validation {SRC:kits21}/kits21/data "
             "-o {W}/eval/scratch.json"),
        Step("score the transfer's 42 validation cases",
             "nnunet-transfer evaluate kits21 {RESULTS}/Dataset601_KiTS21/KiTS21HECTrainer_100epochs__"
             "nnUNetResUNetASPPPaperPlans_from600__3d_fullres/fold_0/validation {SRC:kits21}/kits21/data "
             "-o {W}/eval/pretrained.json"),
    ),
    evaluations=(Evaluation("scratch", "{W}/eval/scratch.json", "kits21"),
                 Evaluation("pretrained", "{W}/eval/pretrained.json", "kits21")),
    # demo: the demo's own defaults (``nnunet-transfer demo``); tiny: the same pipeline at a smoke-test budget
    scales={"tiny": {"mots_cases": 2, "kidney_cases": 2, "target_cases": (2,), "val_cases": 1, "test_cases": 2,
                     "pretrain_epochs": 1, "pretrain_iterations": 2, "epochs": 1, "iterations": 2,
                     "shape": (16, 32, 32), "base_features": 4, "max_features": 16},
            "demo": {}},
    seeds={"tiny": (0,), "demo": ()},  # () = the demo's default seeds
    notes=("The demo scale is `nnunet-transfer demo` (synthetic MOTS and KiTS21, the demo's narrow plans), both "
           "arms with the HEC trainer, so it isolates the pretraining; the paper's baseline is nnU-Net's stock "
           "trainer.",
           "Final submission in the paper: 5 folds x 1000 epochs on all KiTS21 cases (KiTS21HECTrainer, folds 0-4)."),
)

MLEAM_PROSTATE = Recipe(
    name="mleam-prostate",
    paper="Transfer Learning with Edge Attention for Prostate MRI Segmentation (MLEAM)",
    paper_file="mleam-prostate-edge-attention",
    summary="pretrain a dilated 3D ResNet-101 encoder on other MRI (SGD 0.9, CE), then train the MLEAM decoder "
            "(RRB, PAM, multi-level edge attention) on PROMISE12 with Dice + edge MSE (w 0.5, 0.8, 1.0); compare "
            "with and without the edge supervision",
    arms=(("no-edge", "MLEAM decoder without edge supervision (edge-loss weights 0)"),
          ("edge", "MLEAM decoder with edge supervision (w = 0.5, 0.8, 1.0)")),
    table="arms", columns=(("kidney_and_mass", "dice", "Dice"),),
    sources=(
        Source("pretraining_mri", "the MRI volumes to pretrain the encoder on, as an nnU-Net raw dataset (the "
                                  "paper used its partner hospital's MRI, which is not public)",
               "your own data (any labelled MRI dataset, e.g. MSD Task05_Prostate: http://medicaldecathlon.com/)",
               ("dataset.json", "imagesTr/*")),
        Source("promise12", "PROMISE12 training data (50 cases) converted to an nnU-Net raw dataset",
               "https://promise12.grand-challenge.org/ (registration)", ("dataset.json", "imagesTr/*"),
               "imagesTr/CaseXX_0000.nii.gz + labelsTr/CaseXX.nii.gz (SimpleITK reads the .mhd files)"),
    ),
    steps=(
        Step("the pretraining MRI and PROMISE12 into nnU-Net's raw folder (Dataset610_PretrainMRI, "
             "Dataset611_PROMISE12)", "cp -r {SRC:pretraining_mri} {RAW}/Dataset610_PretrainMRI && "
                                      "cp -r {SRC:promise12} {RAW}/Dataset611_PROMISE12"),
        Step("fingerprints", "nnUNetv2_extract_fingerprint -d 610 611 -np 8"),
        Step("the paper's preprocessing: 0.625 x 0.625 x 1.5 mm, patch 96 x 96 x 32, batch 16",
             "nnunet-transfer plan -d 610 -pl MLEAMPaperPlanner && nnunet-transfer plan -d 611 -pl MLEAMPaperPlanner"),
        Step("the pretraining network: dilated Med3D ResNet-101 encoder",
             "nnunet-transfer plan-arch -d 610 -a med3d-resnet101 -sp nnUNetMLEAMPaperPlans"),
        Step("encoder pretraining (SGD momentum 0.9, lr 0.01, cross entropy)",
             "nnUNetv2_train 610 3d_fullres all -tr MLEAMPretrainTrainer -p nnUNetMLEAMPaperPlans_med3d-resnet101"),
        Step("MLEAM on PROMISE12 with the pretrained encoder",
             "nnunet-transfer plan-arch -d 611 -a med3d-resnet101 --decoder mleam -sp nnUNetMLEAMPaperPlans "
             "--weights {RESULTS}/Dataset610_PretrainMRI/MLEAMPretrainTrainer__nnUNetMLEAMPaperPlans_med3d-resnet101"
             "__3d_fullres/fold_all/checkpoint_final.pth"),
        Step("with edge supervision: Adam (0.9, 0.999) from 1e-3, /10 every 2000 iterations",
             "nnUNetv2_train 611 3d_fullres 0 -tr MLEAMTrainer_paper "
             "-p nnUNetMLEAMPaperPlans_med3d-resnet101_mleam"),
        Step("without edge supervision (same schedule, edge-loss weights 0)",
             "nnUNetv2_train 611 3d_fullres 0 -tr MLEAMTrainer_paperNoEdge "
             "-p nnUNetMLEAMPaperPlans_med3d-resnet101_mleam"),
        Step("score both on fold 0's validation cases (sliding window stride 24 x 24 x 8 = tile step 0.25 was used "
             "by the paper at test time: nnUNetv2_predict ... -step_size 0.25)",
             "nnUNetv2_evaluate_folder {RAW}/Dataset611_PROMISE12/labelsTr {RESULTS}/Dataset611_PROMISE12/"
             "MLEAMTrainer_paper__nnUNetMLEAMPaperPlans_med3d-resnet101_mleam__3d_fullres/fold_0/validation "
             "-djfile {RAW}/Dataset611_PROMISE12/dataset.json -pfile {PREPROCESSED}/Dataset611_PROMISE12/"
             "nnUNetMLEAMPaperPlans_med3d-resnet101_mleam.json -o {W}/eval/edge.json"),
        Step("", "nnUNetv2_evaluate_folder {RAW}/Dataset611_PROMISE12/labelsTr {RESULTS}/Dataset611_PROMISE12/"
                 "MLEAMTrainer_paperNoEdge__nnUNetMLEAMPaperPlans_med3d-resnet101_mleam__3d_fullres/fold_0/"
                 "validation -djfile {RAW}/Dataset611_PROMISE12/dataset.json -pfile {PREPROCESSED}/"
                 "Dataset611_PROMISE12/nnUNetMLEAMPaperPlans_med3d-resnet101_mleam.json -o {W}/eval/no-edge.json"),
    ),
    evaluations=(Evaluation("no-edge", "{W}/eval/no-edge.json", "nnunet"),
                 Evaluation("edge", "{W}/eval/edge.json", "nnunet")),
    scales={"tiny": {"labelled": 2, "test_cases": 2, "epochs": 1, "iterations": 2, "shape": (16, 32, 32),
                     "base_features": 4, "max_features": 16, "data_seed": 40},
            "demo": {"labelled": 4, "test_cases": 4, "epochs": 10, "iterations": 30, "shape": (16, 48, 48),
                     "patch_size": (16, 32, 32), "base_features": 8, "max_features": 64, "data_seed": 40}},
    seeds={"tiny": (0,), "demo": (0, 1, 2)},
    notes=("Demo: generated KiTS21-layout volumes stand in for PROMISE12 (kidney and masses = the foreground), "
           "nnU-Net's encoder in place of the ResNet-101 and no encoder pretraining: both arms start alike, the "
           "comparison is the edge supervision alone.",
           "MLEAMTrainer_paperNoEdge is MLEAMTrainer_paper with edge_loss_weights = (0, 0, 0)."),
)

MED3D = Recipe(
    name="med3d",
    paper="Med3D: Transfer Learning for 3D Medical Image Analysis",
    paper_file="med3d",
    summary="initialise a 3D ResNet encoder from Med3D (MedicalNet weights, pretrained on 3DSeg-8) or train from "
            "scratch; Adam from 1e-3 (pretrained) / 1e-2 (scratch); intensities clipped to the 0.5-99.5 "
            "percentiles, then z-scored per volume",
    arms=(("scratch", "train from scratch (Adam 1e-2)"), ("med3d", "Med3D weights (Adam 1e-3)")),
    table="arms", columns=(("kidney_and_mass", "dice", "Dice"),),
    sources=(
        Source("medicalnet", "MedicalNet's released weights, e.g. resnet_10_23dataset.pth / resnet_50_23dataset.pth",
               "https://github.com/Tencent/MedicalNet (pretrain/ links; also https://huggingface.co/TencentMedicalNet)",
               ("resnet_*.pth",)),
        Source("target", "the fine-tuning dataset as an nnU-Net raw dataset (the paper: Visceral lung, LiTS liver)",
               "Visceral: http://www.visceral.eu/ ; LiTS: https://competitions.codalab.org/competitions/17094",
               ("dataset.json", "imagesTr/*")),
    ),
    steps=(
        Step("the paper's intensity normalisation: clip to the 0.5-99.5 percentiles (LiTS: window -200..250 HU)",
             "nnunet-transfer clip-intensities {SRC:target} {RAW}/Dataset620_Med3DTarget --percentiles 0.5 99.5"),
        Step("fingerprint and plans with per-volume z-score", "nnUNetv2_extract_fingerprint -d 620 -np 8 && "
                                                              "nnunet-transfer plan -d 620 -pl Med3DPlanner"),
        Step("scratch plans: the Med3D ResNet-50 U-Net",
             "nnunet-transfer plan-arch -d 620 -a med3d-resnet50 -sp nnUNetMed3DPlans -p nnUNetMed3DPlans_scratch"),
        Step("pretrained plans: the same network with MedicalNet's weights recorded",
             "nnunet-transfer plan-arch -d 620 -a med3d-resnet50 -sp nnUNetMed3DPlans -p nnUNetMed3DPlans_med3d "
             "--weights {SRC:medicalnet}/resnet_50_23dataset.pth"),
        Step("train from scratch (Adam from 1e-2)",
             "nnUNetv2_train 620 3d_fullres 0 -tr Med3DFinetuneTrainer_paperAdamScratch -p nnUNetMed3DPlans_scratch"),
        Step("fine-tune from Med3D (Adam from 1e-3)",
             "nnUNetv2_train 620 3d_fullres 0 -tr Med3DFinetuneTrainer_paperAdam -p nnUNetMed3DPlans_med3d"),
        Step("score both on fold 0's validation cases",
             "nnUNetv2_evaluate_folder {RAW}/Dataset620_Med3DTarget/labelsTr {RESULTS}/Dataset620_Med3DTarget/"
             "Med3DFinetuneTrainer_paperAdamScratch__nnUNetMed3DPlans_scratch__3d_fullres/fold_0/validation "
             "-djfile {RAW}/Dataset620_Med3DTarget/dataset.json -pfile {PREPROCESSED}/Dataset620_Med3DTarget/"
             "nnUNetMed3DPlans_scratch.json -o {W}/eval/scratch.json"),
        Step("", "nnUNetv2_evaluate_folder {RAW}/Dataset620_Med3DTarget/labelsTr {RESULTS}/Dataset620_Med3DTarget/"
                 "Med3DFinetuneTrainer_paperAdam__nnUNetMed3DPlans_med3d__3d_fullres/fold_0/validation "
                 "-djfile {RAW}/Dataset620_Med3DTarget/dataset.json -pfile {PREPROCESSED}/Dataset620_Med3DTarget/"
                 "nnUNetMed3DPlans_med3d.json -o {W}/eval/med3d.json"),
    ),
    evaluations=(Evaluation("scratch", "{W}/eval/scratch.json", "nnunet"),
                 Evaluation("med3d", "{W}/eval/med3d.json", "nnunet")),
    scales={"tiny": {"depth": 10, "mots_cases": 2, "labelled": 2, "test_cases": 2, "pretrain_epochs": 1,
                     "pretrain_iterations": 2, "epochs": 1, "iterations": 2, "shape": (16, 48, 48), "data_seed": 0},
            "demo": {"depth": 10, "mots_cases": 3, "labelled": 2, "test_cases": 4, "pretrain_epochs": 4,
                     "pretrain_iterations": 25, "epochs": 3, "iterations": 10, "shape": (16, 48, 48),
                     "data_seed": 0}},
    seeds={"tiny": (0,), "demo": (0, 1, 2)},
    notes=("Demo: Med3D's own multi-branch pretraining on generated MOTS sources stands in for 3DSeg-8, and the "
           "generated KiTS21 kidneys for the lung/liver targets; both arms use the same trainer (Med3DFinetuneTrainer) "
           "so only the initialisation differs.",),
)

LOCALIZATION = Recipe(
    name="localization",
    paper="Deep feature transfer between localization and segmentation tasks",
    paper_file="localization-pretraining",
    summary="train the U-Net encoder + FC layers to regress the target's centre (MSE, RMSprop) on many cheaply "
            "labelled images, freeze it, train the decoder for segmentation (soft Dice, Adam) on few labelled "
            "images; Dice against the number of labelled images, with and without the localisation pretraining",
    arms=(("scratch", "no pretraining: the same network trained end to end from random weights"),
          ("localisation-pretrained", "encoder pretrained as a localiser, frozen")),
    table="few-label", columns=(("kidney_and_mass", "dice", "Dice"),),
    sources=(
        Source("fundus", "fundus photographs with optic-disc centres (localisation) and a few masks (segmentation), "
                         "Kvasir-SEG layout (images/*.jpg, masks/*.jpg) plus centres.json; the paper's RetCam "
                         "images are not public",
               "your own data (public fundus sets with optic-disc masks: e.g. REFUGE, https://refuge.grand-"
               "challenge.org/)", ("images/*", "masks/*", "centres.json")),
    ),
    steps=(
        Step("the paper's preprocessing (grayscale, normalisation, CLAHE, gamma) while converting",
             "nnunet-transfer convert kvasir {SRC:fundus} -d 630 --name Fundus --image-preprocessing "
             "localization-paper"),
        Step("centre annotations -> small sphere labels for the localiser",
             "nnunet-transfer points-to-labels {SRC:fundus}/centres.json {RAW}/Dataset630_Fundus --coordinates voxel"),
        Step("plans with the paper's encoder (3x3 convs, BN, ReLU, dropout, 2x2 max-pooling)",
             "nnUNetv2_plan_and_preprocess -d 630 -c 2d -np 8 && nnunet-transfer plan-arch -d 630 -a "
             "localization-paper -c 2d"),
        Step("phase 1: localisation (encoder + FC regress the centre, MSE, RMSprop)",
             "nnUNetv2_train 630 2d 0 -tr LocalizationPretrainTrainer -p nnUNetPlans_localization-paper"),
        Step("phase 2: record the localiser as the encoder's weights",
             "nnunet-transfer set-pretrained {RESULTS}/Dataset630_Fundus/LocalizationPretrainTrainer__"
             "nnUNetPlans_localization-paper__2d/fold_0/checkpoint_final.pth -d 630 -c 2d "
             "-p nnUNetPlans_localization-paper"),
        Step("segmentation with the frozen encoder (soft Dice, Adam), per number of labelled images (one "
             "splits_final.json fold per number)",
             "nnUNetv2_train 630 2d 1 -tr FrozenEncoderTrainer -p nnUNetPlans_localization-paper"),
    ),
    evaluations=(),
    scales={"tiny": {"localiser_cases": 3, "labelled": (2,), "test_cases": 2, "pretrain_epochs": 1,
                     "pretrain_iterations": 2, "epochs": 1, "iterations": 2, "shape": (16, 32, 32),
                     "base_features": 4, "max_features": 16, "data_seed": 21},
            "demo": {"localiser_cases": 8, "labelled": (2, 4), "test_cases": 4, "pretrain_epochs": 6,
                     "pretrain_iterations": 25, "epochs": 6, "iterations": 25, "shape": (16, 48, 48),
                     "base_features": 8, "max_features": 64, "data_seed": 21}},
    seeds={"tiny": (0,), "demo": (0, 1, 2)},
    notes=("Paper scale needs your own data (the paper's is private): the steps show the pipeline; `recipe run "
           "localization --scale paper` checks the data layout and stops before training, since the folds per "
           "number of labelled images depend on your data.",
           "Demo: generated KiTS21 kidneys (3D) stand in for the optic disc; centres come from the masks."),
)

ATTENTION_POLYP = Recipe(
    name="attention-polyp",
    paper="Transfer of Knowledge: Fine-tuning for Polyp Segmentation with Attention",
    paper_file="attention-unet-finetuning",
    summary="fine-tune the public brain-MRI U-Net (mateuszbuda/brain-segmentation-pytorch) with additive attention "
            "gates on Kvasir-SEG (80:20 split, 256 x 256, Adam 1e-4, BCE + Dice + L2); Dice and IoU",
    arms=(("scratch-gates", "attention U-Net from scratch"),
          ("pretrained-gates", "attention U-Net from the brain U-Net (the paper)"),
          ("scratch-no-gates", "U-Net without gates from scratch"),
          ("pretrained-no-gates", "U-Net without gates from the brain U-Net")),
    table="arms", columns=(("polyp", "dice", "Mean Dice"), ("polyp", "iou", "Mean IoU")),
    sources=(
        Source("Kvasir-SEG", "Kvasir-SEG: 1000 polyp images and masks",
               "https://datasets.simula.no/kvasir-seg/ (https://datasets.simula.no/downloads/kvasir-seg.zip)",
               ("images/*.jpg", "masks/*.jpg")),
        Source("brain_unet", "the brain-MRI U-Net's torch hub weights (unet.pt)",
               "https://github.com/mateuszbuda/brain-segmentation-pytorch (release v1.0; torch.hub.load("
               "'mateuszbuda/brain-segmentation-pytorch', 'unet', pretrained=True))", ("*.pt",)),
    ),
    steps=(
        Step("Kvasir-SEG -> nnU-Net 2D, the paper's input handling (256 x 256)",
             "nnunet-transfer convert kvasir {SRC:Kvasir-SEG} -d 640 --name KvasirSEG --image-preprocessing "
             "attention-paper"),
        Step("plans and preprocessing (80:20 split: fold 0 of nnU-Net's 5 folds)",
             "nnUNetv2_plan_and_preprocess -d 640 -c 2d -np 8"),
        Step("a second plans file for the pretrained arms",
             "nnUNetv2_plan_experiment -d 640 -overwrite_plans_name nnUNetPlans_brain && nnUNetv2_preprocess -d 640 "
             "-plans_name nnUNetPlans_brain -c 2d -np 8"),
        Step("the brain U-Net's weights recorded in it (its own file format, reported per tensor)",
             "nnunet-transfer set-pretrained {SRC:brain_unet}/unet.pt -d 640 -c 2d -p nnUNetPlans_brain"),
        Step("attention U-Net from the brain U-Net (the paper: Adam 1e-4, BCE + Dice + L2)",
             "nnUNetv2_train 640 2d 0 -tr AttentionUNetTrainer_brainUNet -p nnUNetPlans_brain"),
        Step("the same network from scratch", "nnUNetv2_train 640 2d 0 -tr AttentionUNetTrainer_brainUNet"),
        Step("without gates, from the brain U-Net and from scratch",
             "nnUNetv2_train 640 2d 0 -tr AttentionUNetTrainer_brainUNetNoGates -p nnUNetPlans_brain && "
             "nnUNetv2_train 640 2d 0 -tr AttentionUNetTrainer_brainUNetNoGates"),
    ) + tuple(Step("score fold 0's validation images (Dice, IoU)" if i == 0 else "",
                   "nnUNetv2_evaluate_folder {RAW}/Dataset640_KvasirSEG/labelsTr {RESULTS}/Dataset640_KvasirSEG/"
                   f"{trainer}__{plans}__2d/fold_0/validation -djfile {{RAW}}/Dataset640_KvasirSEG/dataset.json "
                   f"-pfile {{PREPROCESSED}}/Dataset640_KvasirSEG/{plans}.json -o {{W}}/eval/{arm}.json")
                  for i, (arm, trainer, plans) in enumerate((
                      ("scratch-gates", "AttentionUNetTrainer_brainUNet", "nnUNetPlans"),
                      ("pretrained-gates", "AttentionUNetTrainer_brainUNet", "nnUNetPlans_brain"),
                      ("scratch-no-gates", "AttentionUNetTrainer_brainUNetNoGates", "nnUNetPlans"),
                      ("pretrained-no-gates", "AttentionUNetTrainer_brainUNetNoGates", "nnUNetPlans_brain")))),
    evaluations=tuple(Evaluation(arm, f"{{W}}/eval/{arm}.json", "nnunet")
                      for arm in ("scratch-gates", "pretrained-gates", "scratch-no-gates", "pretrained-no-gates")),
    scales={"tiny": {"source_images": 6, "labelled": 2, "test_cases": 2, "pretrain_epochs": 1,
                     "pretrain_iterations": 2, "epochs": 1, "iterations": 2, "image_size": (32, 32), "data_seed": 31},
            "demo": {"source_images": 20, "labelled": 2, "test_cases": 8, "pretrain_epochs": 4,
                     "pretrain_iterations": 25, "epochs": 3, "iterations": 10, "image_size": (64, 64),
                     "data_seed": 31}},
    seeds={"tiny": (0,), "demo": (0, 1, 2)},
    notes=("Demo: a plain 2D U-Net trained on inverted-grayscale generated endoscopy images stands in for the "
           "brain-MRI U-Net (no download); the no-gates arms are AttentionUNetTrainer on nnU-Net's gate-free U-Net.",),
)

RECIPES: Dict[str, Recipe] = {r.name: r for r in (KITS21_DODNET, MLEAM_PROSTATE, MED3D, LOCALIZATION,
                                                   ATTENTION_POLYP)}
SCALES = ("tiny", "demo", "paper")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def fill(command: str, workspace: Optional[str] = None, sources: Optional[Mapping[str, str]] = None) -> str:
    """A command with its placeholders filled: the workspace's folders and the source folders when given, else the
    forms a user types (``$nnUNet_results``, ``/path/to/<source>``)."""
    import re

    w = workspace or "."
    folders = {"RAW": "nnUNet_raw", "PREPROCESSED": "nnUNet_preprocessed", "RESULTS": "nnUNet_results"}
    for key, var in folders.items():
        command = command.replace("{" + key + "}", f"{w}/{var}" if workspace else f"${var}")
    command = command.replace("{W}", w if workspace else "$RECIPE_WORKSPACE")
    return re.sub(r"\{SRC:([^}]+)\}", lambda m: (sources or {}).get(m.group(1), f"/path/to/{m.group(1)}"), command)


def describe(recipe: Recipe) -> str:
    """What ``recipe show`` prints: the paper, what it compares, the data, and the published command sequence."""
    lines = [f"{recipe.name}: {recipe.paper}  (paper: papers/{recipe.paper_file})", "", f"  {recipe.summary}", "",
             "Compares (same data, plans and budget for every arm; the first arm is the baseline):"]
    lines += [f"  {arm:<22} {what}" for arm, what in recipe.arms]
    lines += ["", "Reports: " + ", ".join(title for _, _, title in recipe.columns)
              + {"few-label": " against the number of labelled cases"}.get(recipe.table, "") + " per arm, mean +- SD "
              "over seeds, paired differences", "", "Data (paper scale):"]
    for source in recipe.sources:
        lines += [f"  {source.name}: {source.what}", f"      from: {source.url}"]
        if source.how:
            lines.append(f"      layout: {source.how}")
    lines += ["", "The published setting, step by step:"]
    number = 0
    for step in recipe.steps:
        if step.title:
            number += 1
            lines.append(f"  {number}. {step.title}" + ("  (manual)" if step.manual else ""))
        for part in fill(step.command).split(" && "):
            lines.append(f"     $ {part}")
    if recipe.notes:
        lines += ["", "Notes:"] + [f"  - {note}" for note in recipe.notes]
    sources = " ".join(f"--source {s.name}=DIR" for s in recipe.sources)
    lines += ["", "Run it:",
              f"  nnunet-transfer recipe run {recipe.name} --workspace W --scale paper {sources}   (GPU)",
              f"  nnunet-transfer recipe run {recipe.name} --workspace W --scale demo    (CPU, generated data, "
              "minutes)",
              f"  nnunet-transfer recipe run {recipe.name} --workspace W --scale tiny    (smoke test of every step)"]
    return "\n".join(lines)
