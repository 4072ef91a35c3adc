"""The model zoo's data: one :class:`~nnunet_transfer.zoo.record.ZooRecord` per released checkpoint.

Adding a released checkpoint = adding one entry to :data:`RECORDS` (nothing else refers to an entry by name).

Every address, licence and checksum below is taken from the official repository's README, model card or release
page named in ``page``. Where a release publishes no checksum, ``sha256`` is ``NOT_PUBLISHED`` and ``zoo verify``
checks the file's structure against the record's architecture instead; a digest is only ever added after it has
been measured on a download from the official address. Dropbox share links are used in their direct-download form
(``dl=1``); Google Drive and Baidu links are web pages, not files, so those records carry ``url=None`` and
``zoo fetch`` names the page to download from (then ``zoo verify FILE`` checks the file).
"""

from __future__ import annotations

from typing import Tuple

from nnunet_transfer.zoo.record import NOT_PUBLISHED, ExpectedInput, Intensity, ZooRecord

# ---------------------------------------------------------------------------------------- shared descriptions
_ZSCORE = Intensity("zscore", note="as nnssl's fine-tuning planner writes (ZScoreNormalization for every channel)")
_MEDICALNET_ZSCORE = Intensity("zscore", note="MedicalNet: mean and std of the voxels > 0, noise outside")
#: SuPreM, CLIP-Driven Universal Model, VoCo: MONAI ScaleIntensityRanged(a_min=-175, a_max=250, b_min=0, b_max=1,
#: clip=True)
_HU_175_250 = Intensity("window", lower=-175.0, upper=250.0, subtract=-175.0, divide=425.0,
                        note="MONAI ScaleIntensityRanged(a_min=-175, a_max=250, b_min=0, b_max=1, clip=True)")
#: Models Genesis (pytorch/ and its data preparation): HU clipped to [-1000, 1000], scaled to [0, 1]
_HU_1000 = Intensity("window", lower=-1000.0, upper=1000.0, subtract=-1000.0, divide=2000.0,
                     note="Models Genesis: hu_min=-1000, hu_max=1000, scaled to [0, 1]")
#: DoDNet a_DynConv/MOTSDataset.truncate: clip to [-325, 325], divide by 325
_HU_325 = Intensity("window", lower=-325.0, upper=325.0, subtract=0.0, divide=325.0,
                    note="DoDNet MOTSDataset.truncate: clip to [-325, 325], divide by 325")
_NNUNET_CT = Intensity("ct", note="the source plans carry the statistics (foreground_intensity_properties)")

_MRI_BRAIN = "MRI (brain, OpenMind: 114k 3D volumes of 23 MRI sequences)"
_CT = "CT"

# ----------------------------------------------------------------------------------------------- citations
_OPENMIND = ("Wald T, Ulrich C, Suprijadi J, Ziegler S, Nohel M, Peretzke R, ... Maier-Hein KH. An OpenMind for 3D "
             "medical vision self-supervised learning. arXiv:2412.17041 (2024)")
_PRIMUS = ("Wald T, Roy S, Isensee F, Ulrich C, Ziegler S, Trofimova D, Stock R, Baumgartner M, Koehler G, "
           "Maier-Hein K. Primus: Enforcing Attention Usage for 3D Medical Image Segmentation. arXiv:2503.01835 "
           "(2025)")
_STUNET = ("Huang Z, Wang H, Deng Z, Ye J, Su Y, Sun H, He J, Gu Y, Gu L, Zhang S, Qiao Y. STU-Net: Scalable and "
           "Transferable Medical Image Segmentation Models Empowered by Large-Scale Supervised Pre-training. "
           "arXiv:2304.06716 (2023)")
_SUPREM = ("Li W, Yuille A, Zhou Z. How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks? ICLR 2024")
_GENESIS = ("Zhou Z, Sodha V, Rahman Siddiquee MM, Feng R, Tajbakhsh N, Gotway MB, Liang J. Models Genesis: Generic "
            "Autodidactic Models for 3D Medical Image Analysis. MICCAI 2019, LNCS 11767, 384-393")
_VOCO = ("Wu L, Zhuang J, Chen H. VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical "
         "Image Analysis. CVPR 2024")
_DODNET = ("Zhang J, Xie Y, Xia Y, Shen C. DoDNet: Learning to segment multi-organ and tumors from multiple partially "
           "labeled datasets. CVPR 2021")
_UNIVERSAL = ("Liu J, Zhang Y, Chen JN, Xiao J, Lu Y, Landman BA, Yuan Y, Yuille A, Tang Y, Zhou Z. CLIP-Driven "
              "Universal Model for Organ Segmentation and Tumor Detection. ICCV 2023")
_MULTITALENT = ("Ulrich C, Isensee F, Wald T, Zenk M, Baumgartner M, Maier-Hein KH. MultiTalent: A Multi-Dataset "
                "Approach to Medical Image Segmentation. MICCAI 2023")
_TOTALSEG = ("Wasserthal J, Breit HC, Meyer MT, Pradella M, Hinck D, Sauter AW, Heye T, Boll DT, Cyriac J, Yang S, "
             "Bach M, Segeroth M. TotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images. "
             "Radiology: Artificial Intelligence 2023;5(5):e230024")
_MED3D = "Chen S, Ma K, Zheng Y. Med3D: Transfer Learning for 3D Medical Image Analysis. arXiv:1904.00625 (2019)"

# ------------------------------------------------------------------------------------- fine-tuning commands
_NNSSL_FT = ("nnUNetv2_plan_experiment -d ID -pl nnUNetPlannerResEncL && nnunet-transfer set-pretrained FILE -d ID "
             "-p nnUNetResEncUNetLPlans --match-normalisation && nnUNetv2_preprocess -d ID -plans_name "
             "nnUNetResEncUNetLPlans_zscore -c 3d_fullres && nnUNetv2_train ID 3d_fullres 0 -tr FineTuneTrainer "
             "-p nnUNetResEncUNetLPlans_zscore")
_PRIMUS_FT = ("nnunet-transfer plan-arch -d ID -a primus-m --weights FILE && nnUNetv2_train ID 3d_fullres 0 "
              "-tr FineTuneTrainer -p nnUNetPlans_primus-m")


def _plan_arch_ft(arch: str, tag: str = "") -> str:
    """plan-arch with the weights; with ``tag`` (a fixed window, not nnU-Net's CT scheme) also the plans with the
    pretraining's normalisation (``set-pretrained --match-normalisation``) and their preprocessing."""
    plans = f"nnUNetPlans_{arch}"
    if not tag:
        return (f"nnunet-transfer plan-arch -d ID -a {arch} --weights FILE && nnUNetv2_train ID 3d_fullres 0 "
                f"-tr FineTuneTrainer -p {plans}")
    return (f"nnunet-transfer plan-arch -d ID -a {arch} --weights FILE && nnunet-transfer set-pretrained -d ID -p "
            f"{plans} --match-normalisation && nnUNetv2_preprocess -d ID -plans_name {plans}_{tag} -c 3d_fullres && "
            f"nnUNetv2_train ID 3d_fullres 0 -tr FineTuneTrainer -p {plans}_{tag}")



def _nnunet_results_ft(plans: str = "nnUNetPlans") -> str:
    return (f"nnunet-transfer set-pretrained FILE -d ID -p {plans} --match-normalisation && nnunet-transfer "
            f"transfer-check -d ID -tr FineTuneTrainer -p {plans}_ct && nnUNetv2_train ID 3d_fullres 0 "
            f"-tr FineTuneTrainer -p {plans}_ct")


# ------------------------------------------------------------------------------------------------ nnssl
_HF = "https://huggingface.co/AnonRes"


def _openmind(backbone: str, method: str, method_name: str) -> ZooRecord:
    repo = f"{backbone}-OpenMind-{method}"
    resenc = backbone == "ResEncL"
    return ZooRecord(
        name=f"openmind-{backbone.lower()}-{method.lower()}", family="nnssl / OpenMind",
        file_name="checkpoint_final.pth", url=f"{_HF}/{repo}/resolve/main/checkpoint_final.pth",
        page=f"{_HF}/{repo}", sha256=NOT_PUBLISHED, size_bytes=None,
        size_note="the model card states no size; Hugging Face lists it on the repository's file page",
        license="CC-BY-4.0", citation=_OPENMIND if resenc else f"{_OPENMIND}; {_PRIMUS}",
        architecture="ResidualEncoderUNet (nnU-Net ResEnc-L)" if resenc else "primus-m",
        format="nnssl checkpoint: network_weights + nnssl_adaptation_plan",
        expected_input=ExpectedInput(_MRI_BRAIN, None, _ZSCORE),
        finetune=_NNSSL_FT if resenc else _PRIMUS_FT,
        markers=("encoder.stages.", "stem.") if resenc else ("down_projection.proj.", "pos_embed"),
        details={"arch_class": "ResEncL|ResidualEncoderUNet" if resenc else "Primus"},
        description=f"{'ResEnc-L CNN' if resenc else 'Primus-M transformer'} encoder pretrained with "
                    f"{method_name} on OpenMind (nnssl); the adaptation plan in the file states the pretraining "
                    "spacing and patch size")


_NNSSL: Tuple[ZooRecord, ...] = (
    _openmind("ResEncL", "MAE", "a masked autoencoder (MAE)"),
    _openmind("ResEncL", "VF", "VolumeFusion"),
    _openmind("PrimusM", "SimCLR", "SimCLR"),
    _openmind("PrimusM", "VF", "VolumeFusion"),
)

# ----------------------------------------------------------------------------------------------- STU-Net
_STUNET_PAGE = "https://github.com/uni-medical/STU-Net#pre-trained-models"


def _stunet(size: str, file: str, params: str) -> ZooRecord:
    return ZooRecord(
        name=f"stunet-{size[0]}", family="STU-Net", file_name=file, url=None, page=_STUNET_PAGE,
        sha256=NOT_PUBLISHED, size_bytes=None, size_note=f"{params} parameters (Google Drive / Baidu Netdisk)",
        license="see uni-medical/STU-Net", citation=_STUNET, architecture=f"stunet-{size[0]}",
        format="nnU-Net v1 .model (state_dict) + .model.pkl (plans)",
        expected_input=ExpectedInput(_CT, (1.5, 1.5, 1.5), _NNUNET_CT),
        finetune=_plan_arch_ft(f"stunet-{size[0]}"), markers=("conv_blocks_context.",),
        description=f"STU-Net-{size[0].upper()} trained on TotalSegmentator for 4000 epochs (crop 128^3)")


_STUNETS: Tuple[ZooRecord, ...] = (
    _stunet("small", "small_ep4k.model", "14.6M"),
    _stunet("base", "base_ep4k.model", "58.26M"),
    _stunet("large", "large_ep4k.model", "440.30M"),
    _stunet("huge", "huge_ep4k.model", "1457.33M"),
)

# ------------------------------------------------------------------------------------ SuPreM and its table
_SUPREM_PAGE = "https://github.com/MrGiovanni/SuPreM#a-suite-of-pre-trained-models-suprem"


def _dropbox(share_link: str) -> str:
    """The direct-download form of a Dropbox share link as published (``dl=0`` page -> ``dl=1`` file)."""
    if "dl=0" in share_link:
        return share_link.replace("dl=0", "dl=1")
    return share_link + ("&" if "?" in share_link else "?") + "dl=1"


#: the share links as published in SuPreM's README table (and the Universal Model's README)
_SHARE_LINKS = {
    "suprem-unet": "https://www.dropbox.com/scl/fi/r5ti0vj6sgrengvvmez1k/supervised_suprem_unet_2100.pth"
                   "?rlkey=i4rw4xw44vpjpz75eq32fk0rb&dl=0",
    "suprem-swinunetr": "https://www.dropbox.com/scl/fi/gd1d7k9mac5azpwurds66/supervised_suprem_swinunetr_2100.pth"
                        "?rlkey=xoqr7ey52rnese2k4hwmrlqrt&dl=0",
    "suprem-segresnet": "https://www.dropbox.com/scl/fi/hq10omgcie7mdsxo34bjg/supervised_suprem_segresnet_2100.pth"
                        "?rlkey=pwwes2dnlo2t6na80kioljbmm&dl=0",
    "universal-unet": "https://www.dropbox.com/s/lyunaue0wwhmv5w/unet.pth",
    "universal-swinunetr": "https://www.dropbox.com/s/jdsodw2vemsy8sz/swinunetr.pth",
    "genesis-unet3d": "https://www.dropbox.com/scl/fi/h9006v3bhxjlg6x1yvcge/self_supervised_models_genesis_unet_620.pt"
                      "?rlkey=2wqm80i5hvrktpk6n7ye3hc55&dl=0",
    "dodnet-unet3d": "https://www.dropbox.com/scl/fi/wf5xuoqe2pa8xky6rwhv1/supervised_dodnet_unet_920.pth"
                     "?rlkey=c6g94jxukuan4osxldbrpwbix&dl=0",
    "voco-10k": "https://www.dropbox.com/scl/fi/35ldfszlvw1ke4vr7xr5h/VoCo_10k.pt?rlkey=iu3muui9420soyjwlui79njmq&dl=0",
}
#: tensor names every file of an architecture holds (Models Genesis UNet3D, MONAI SwinUNETR/SegResNet, DoDNet)
_MARKERS = {"suprem-unet": ("down_tr64.", "out_tr."), "genesis-unet3d": ("down_tr64.",),
            "swinunetr": ("swinViT.|swin_vit.",), "segresnet": ("convInit.",),
            "dodnet-unet3d": ("controller.", "layer0.")}
_UNIVERSAL_PAGE = "https://github.com/ljwztc/CLIP-Driven-Universal-Model#model"
_WRAPPED = "state dict under 'net' / 'state_dict', keys prefixed 'module.backbone.'"


def _abdomen_atlas(name: str, family: str, file: str, arch: str, params: str, citation: str, description: str, *,
                   intensity: Intensity = _HU_175_250, spacing=(1.5, 1.5, 1.5), page: str = _SUPREM_PAGE,
                   fmt: str = _WRAPPED, license: str = "see the repository (weights released for research)"
                   ) -> ZooRecord:
    return ZooRecord(
        name=name, family=family, file_name=file, url=_dropbox(_SHARE_LINKS[name]), page=page, sha256=NOT_PUBLISHED,
        size_bytes=None, size_note=f"{params} parameters", license=license, citation=citation, architecture=arch,
        format=fmt, expected_input=ExpectedInput(_CT, spacing, intensity), 
        finetune=_plan_arch_ft(arch, intensity.plans_tag),
        description=description, markers=_MARKERS[arch])


_SUPREMS: Tuple[ZooRecord, ...] = (
    _abdomen_atlas("suprem-unet", "SuPreM", "supervised_suprem_unet_2100.pth", "suprem-unet", "19.08M", _SUPREM,
                   "U-Net (Models Genesis UNet3D) supervised on 2100 CT of AbdomenAtlas 1.1"),
    _abdomen_atlas("suprem-swinunetr", "SuPreM", "supervised_suprem_swinunetr_2100.pth", "swinunetr", "62.19M",
                   _SUPREM, "Swin UNETR supervised on 2100 CT of AbdomenAtlas 1.1"),
    _abdomen_atlas("suprem-segresnet", "SuPreM", "supervised_suprem_segresnet_2100.pth", "segresnet", "470.13M",
                   _SUPREM, "SegResNet supervised on 2100 CT of AbdomenAtlas 1.1"),
    _abdomen_atlas("universal-unet", "CLIP-Driven Universal Model", "unet.pth", "suprem-unet", "19.08M", _UNIVERSAL,
                   "Universal Model U-Net backbone (2100 CT)", page=_UNIVERSAL_PAGE),
    _abdomen_atlas("universal-swinunetr", "CLIP-Driven Universal Model", "swinunetr.pth", "swinunetr", "62.19M",
                   _UNIVERSAL, "Universal Model Swin UNETR backbone (2100 CT)", page=_UNIVERSAL_PAGE),
    _abdomen_atlas("genesis-unet3d", "Models Genesis", "self_supervised_models_genesis_unet_620.pt",
                   "genesis-unet3d", "19.08M", _GENESIS,
                   "Models Genesis UNet3D, self-supervised on 623 chest CT (the copy SuPreM's table links)",
                   intensity=_HU_1000, spacing=None, fmt="state dict under 'state_dict', keys prefixed 'module.'",
                   license="see MrGiovanni/ModelsGenesis (patent pending, research use)"),
    _abdomen_atlas("dodnet-unet3d", "DoDNet", "supervised_dodnet_unet_920.pth", "dodnet-unet3d", "17.29M", _DODNET,
                   "DoDNet unet3D with dynamic head, supervised on MOTS (920 CT); the copy SuPreM's table links "
                   "(DoDNet's own README publishes no weights)", intensity=_HU_325, spacing=(1.5, 0.8, 0.8),
                   fmt="state dict, keys prefixed 'module.'"),
)

# ------------------------------------------------------------------------------------------------- VoCo
_VOCOS: Tuple[ZooRecord, ...] = (
    ZooRecord(
        name="voco-10k", family="VoCo", file_name="VoCo_10k.pt",
        url=_dropbox(_SHARE_LINKS["voco-10k"]),
        page="https://github.com/Luffy03/VoCo#performance", sha256=NOT_PUBLISHED, size_bytes=None,
        size_note="Swin UNETR-B encoder", license="see Luffy03/VoCo", citation=_VOCO,
        architecture="swinunetr-v2", format="state dict, keys 'swin_vit.'/'module.'/'backbone.' prefixed",
        expected_input=ExpectedInput(_CT, (1.5, 1.5, 1.5), _HU_175_250),
        finetune=_plan_arch_ft("swinunetr-v2", _HU_175_250.plans_tag), markers=("swinViT.|swin_vit.",),
        description="Swin UNETR v2 encoder, VoCo self-supervised on 10k CT"),
    ZooRecord(
        name="vocomni-nnunet", family="VoCo", file_name="VoComni_nnunet.pt",
        url="https://huggingface.co/Luffy503/VoCo/resolve/main/VoComni_nnunet.pt",
        page="https://huggingface.co/Luffy503/VoCo", sha256=NOT_PUBLISHED, size_bytes=None,
        size_note="31M parameters", license="see Luffy03/VoCo", citation=_VOCO,
        architecture="PlainConvUNet (nnU-Net v2)",
        format="bare state dict of nnU-Net's PlainConvUNet (VoCo's conversion saves model.state_dict() of an nnU-Net "
               "v2 checkpoint_best.pth)",
        expected_input=ExpectedInput(_CT, None, _NNUNET_CT),
        finetune=_nnunet_results_ft(), markers=("encoder.stages.",),
        description="nnU-Net v2 PlainConvUNet supervised on VoComni (20k CT with pseudo labels of 20 classes)"),
)

# ------------------------------------------------------------------------------------------ nnU-Net family
_TOTALSEG_RELEASE = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.0.0-weights"
_NNUNET_FAMILY: Tuple[ZooRecord, ...] = (
    ZooRecord(
        name="totalsegmentator-organs", family="TotalSegmentator",
        file_name="Dataset291_TotalSegmentator_part1_organs_1559subj.zip",
        url=f"{_TOTALSEG_RELEASE}/Dataset291_TotalSegmentator_part1_organs_1559subj.zip",
        page="https://github.com/wasserth/TotalSegmentator/releases/tag/v2.0.0-weights", sha256=NOT_PUBLISHED,
        size_bytes=None, size_note="about 234 MB (release page)", license="Apache-2.0", citation=_TOTALSEG,
        architecture="PlainConvUNet (nnU-Net v2)", format="nnU-Net v2 results zip (plans.json + fold_0)",
        expected_input=ExpectedInput(_CT, (1.5, 1.5, 1.5), _NNUNET_CT), finetune=_nnunet_results_ft(),
        markers=("encoder.stages.",),
        description="TotalSegmentator v2 task 291 (organs, 1.5 mm), one of the five models of the full task"),
    ZooRecord(
        name="multitalent", family="MultiTalent", file_name="MultiTalent.zip", url=None,
        page="https://github.com/MIC-DKFZ/MultiTalent", sha256=NOT_PUBLISHED, size_bytes=None,
        size_note="not published yet", license="see MIC-DKFZ/MultiTalent", citation=_MULTITALENT,
        architecture="ResidualEncoderUNet / PlainConvUNet (nnU-Net v2)",
        format="nnU-Net v2 results folder or zip (plans.json + fold_X)",
        expected_input=ExpectedInput(_CT, None, _NNUNET_CT), finetune=_nnunet_results_ft(),
        markers=("encoder.stages.",),
        description="MultiTalent multi-dataset CT model; the repository announces the weights, the README read "
                    "gives no download address yet: download the results folder/zip from there and verify it"),
)

# ------------------------------------------------------------------------------------------- MedicalNet
_MEDICALNET_PAGE = "https://github.com/Tencent/MedicalNet#prepare"
#: approximate sizes (MB) from the encoders' float32 tensor bytes; same architecture, same size
_MEDICALNET_SIZE_MB = {10: 57.4, 18: 132.0, 34: 253.2, 50: 184.8, 101: 341.2, 152: 470.0, 200: 506.9}


def _medicalnet(depth: int, shortcut: str, suffix: str, data: str) -> ZooRecord:
    file = f"resnet_{depth}{suffix}.pth"
    return ZooRecord(
        name=f"medicalnet-resnet{depth}{suffix.replace('_', '-')}", family="MedicalNet", file_name=file, url=None,
        page=_MEDICALNET_PAGE, sha256=NOT_PUBLISHED, size_bytes=None,
        size_note=f"about {_MEDICALNET_SIZE_MB[depth]} MB, in the MedicalNet_pytorch_files archive (Google Drive / "
                  "Tencent Weiyun)", license="MIT", citation=_MED3D, architecture=f"med3d-resnet{depth}",
        format="{'state_dict': {'module.conv1.weight': ...}} (Med3D ResNet encoder)",
        expected_input=ExpectedInput("CT and MRI (3DSeg-8 / 23 datasets)", None, _MEDICALNET_ZSCORE),
        finetune=(f"nnunet-transfer plan-arch -d ID -a med3d-resnet{depth} --weights FILE && nnUNetv2_train ID "
                  f"3d_fullres 0 -tr Med3DFinetuneTrainer -p nnUNetPlans_med3d-resnet{depth}"),
        description=f"Med3D ResNet-{depth} (shortcut {shortcut}) pretrained on {data}",
        details={"depth": depth, "shortcut_type": shortcut, "pretraining_data": data})


_MEDICALNET: Tuple[ZooRecord, ...] = tuple(
    [_medicalnet(d, s, "", "8 datasets")
     for d, s in ((10, "B"), (18, "A"), (34, "A"), (50, "B"), (101, "B"), (152, "B"), (200, "B"))]
    + [_medicalnet(d, s, "_23dataset", "23 datasets") for d, s in ((10, "B"), (18, "A"), (34, "A"), (50, "B"))]
)

#: every released checkpoint the zoo knows
RECORDS: Tuple[ZooRecord, ...] = (*_NNSSL, *_STUNETS, *_SUPREMS, *_VOCOS, *_NNUNET_FAMILY, *_MEDICALNET)
