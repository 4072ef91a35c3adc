"""Networks of public pretrained 3D models, built from nnU-Net's plans, with the official parameter names.

Each class takes nnU-Net's constructor arguments (``input_channels``, ``num_classes``, ``deep_supervision`` and the
plans' ``arch_kwargs``) and names its parameters exactly as the released checkpoints do, so their weights load
without renaming:

- :mod:`.unet3d`: Models Genesis' ``UNet3D`` (also SuPreM's and the CLIP-Driven Universal Model's U-Net backbone);
- :mod:`.dodnet_unet3d`: DoDNet's ``unet3D`` with a static head in place of the dynamic one;
- :mod:`.stunet`: STU-Net (S, B, L, H);
- :mod:`.monai_networks`: MONAI's Swin UNETR (v1 and v2) and SegResNet (optional dependency ``monai``).

The registry of these networks (name -> class, fixed arguments, constraints) is
:mod:`nnunet_transfer.architectures.networks`.
"""
