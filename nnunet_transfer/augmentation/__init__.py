"""Data augmentation transforms (batchgeneratorsv2 ``BasicTransform`` s) that papers use and nnU-Net does not have;
trainers add them to nnU-Net's own pipeline in ``get_training_transforms``."""
