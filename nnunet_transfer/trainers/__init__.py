"""nnU-Net trainers of nnunet-transfer.

nnU-Net finds trainers by class name; it sees these through the shim module in
``nnunet_transfer/nnunet_ext`` once ``nnUNet_extTrainer`` names that folder (``eval "$(nnunet-transfer env)"``).
Every trainer listed in ``__all__`` is re-exported there, so the class nnU-Net uses is this very object.
"""

from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.localization import LocalizationPretrainTrainer
from nnunet_transfer.trainers.med3d import (Med3DFinetuneTrainer, Med3DFinetuneTrainer_frozenEncoder,
                                            Med3DFinetuneTrainer_MedicalNet, Med3DFinetuneTrainer_MedicalNetSGD,
                                            Med3DFinetuneTrainer_paperAdam, Med3DFinetuneTrainer_paperAdamScratch)
from nnunet_transfer.trainers.med3d_pretrain import Med3DPretrainTrainer
from nnunet_transfer.trainers.mleam import (MLEAMPretrainTrainer, MLEAMTrainer, MLEAMTrainer_paper,
                                            MLEAMTrainer_paperNoEdge)
from nnunet_transfer.trainers.kits import KiTS21HECTrainer, KiTS21HECTrainer_100epochs
from nnunet_transfer.trainers.mots_pretrain import (MOTSPretrainTrainer, MOTSPretrainTrainerBalanced,
                                                   MOTSPretrainTrainerDoDNetPooling)
from nnunet_transfer.trainers.attention_unet import (AttentionUNetTrainer, AttentionUNetTrainer_brainUNet,
                                                     AttentionUNetTrainer_brainUNetNoGates)
from nnunet_transfer.trainers.frozen_encoder import FrozenEncoderTrainer, FrozenEncoderTrainer_logDice

__all__ = [
    "AttentionUNetTrainer",
    "AttentionUNetTrainer_brainUNet",
    "AttentionUNetTrainer_brainUNetNoGates",
    "FrozenEncoderTrainer",
    "FrozenEncoderTrainer_logDice",
    "FineTuneTrainer",
    "KiTS21HECTrainer",
    "KiTS21HECTrainer_100epochs",
    "LocalizationPretrainTrainer",
    "MLEAMPretrainTrainer",
    "MLEAMTrainer",
    "MLEAMTrainer_paper",
    "MLEAMTrainer_paperNoEdge",
    "Med3DFinetuneTrainer",
    "Med3DFinetuneTrainer_MedicalNet",
    "Med3DFinetuneTrainer_MedicalNetSGD",
    "Med3DFinetuneTrainer_frozenEncoder",
    "Med3DFinetuneTrainer_paperAdam",
    "Med3DFinetuneTrainer_paperAdamScratch",
    "Med3DPretrainTrainer",
    "MOTSPretrainTrainer",
    "MOTSPretrainTrainerBalanced",
    "MOTSPretrainTrainerDoDNetPooling",
]
