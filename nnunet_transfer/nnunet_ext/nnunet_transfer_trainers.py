"""Shim that nnU-Net imports from the ``nnUNet_extTrainer`` folder to find nnunet-transfer's trainers.

nnU-Net imports every module of that folder as a top-level module and looks the trainer up by class name. The
classes live in ``nnunet_transfer.trainers``; importing them here (instead of defining them) keeps one class object
per trainer, whichever way it is reached.
"""

from nnunet_transfer.trainers import *  # noqa: F401,F403
from nnunet_transfer.trainers import __all__  # noqa: F401
