"""The 2D papers' image preprocessing, applied while a 2D image dataset is converted (``convert kvasir
--image-preprocessing NAME``), so that nnU-Net trains and predicts on the images the paper's network saw.

* ``localization-paper`` (Hu et al.): "grayscale conversion, normalization, contrast limited adaptive histogram
  equalization and gamma correction", without parameters. We use the values of the widely used retinal-vessel U-Net
  preprocessing: ITU-R 601 grey (0.299 R + 0.587 G + 0.114 B), standardisation then min-max rescaling to 0..255,
  CLAHE with clip limit 2.0 on an 8 x 8 tile grid, gamma 1.2 (``out = in ** (1 / 1.2)``).
  :func:`localization_paper_image` does this per image with numpy and scikit-image's CLAHE (a dependency of
  nnU-Net; OpenCV's clip limit 2.0 on 256 bins is scikit-image's normalised ``clip_limit`` 2 / 256). Output: one
  grey uint8 channel.
* ``attention-paper`` (Khadka): images "normalized in the range of [-1, 1] and resized to 256 x 256".
  :func:`resize_pair` resizes image (bilinear) and mask (nearest) to 256 x 256; the channels are written as nnU-Net's
  ``rgb_to_0_1`` (x / 255), and the brain U-Net maps [0, 1] to [-1, 1] inside its forward
  (:class:`~nnunet_transfer.architectures.brain_unet.BrainUNet`), so nnU-Net's predictor gives it the same input.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["IMAGE_PREPROCESSINGS", "localization_paper_image", "resize_pair", "ATTENTION_PAPER_SIZE"]

#: what ``--image-preprocessing`` accepts, with the dataset.json channel names each one writes
IMAGE_PREPROCESSINGS: Dict[str, Dict[int, str]] = {
    "localization-paper": {0: "rgb_to_0_1"},
    "attention-paper": {0: "rgb_to_0_1", 1: "rgb_to_0_1", 2: "rgb_to_0_1"},
}
ATTENTION_PAPER_SIZE: Tuple[int, int] = (256, 256)
CLAHE_CLIP_LIMIT = 2.0 / 256  # OpenCV clipLimit 2.0 with 256 bins
CLAHE_TILES = 8
GAMMA = 1.2


def localization_paper_image(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 -> (H, W) uint8: grey, standardised and rescaled, CLAHE, gamma (module docstring)."""
    from skimage.exposure import equalize_adapthist

    image = np.asarray(rgb, dtype=np.float64)
    grey = image @ np.array([0.299, 0.587, 0.114]) if image.ndim == 3 else image
    standardised = (grey - grey.mean()) / max(grey.std(), 1e-8)
    span = standardised.max() - standardised.min()
    rescaled = (standardised - standardised.min()) / span if span > 0 else np.zeros_like(standardised)
    kernel = tuple(max(1, s // CLAHE_TILES) for s in rescaled.shape)
    equalised = equalize_adapthist(rescaled, kernel_size=kernel, clip_limit=CLAHE_CLIP_LIMIT, nbins=256)
    corrected = np.clip(equalised, 0, 1) ** (1.0 / GAMMA)
    return np.round(corrected * 255).astype(np.uint8)


def resize_pair(image: np.ndarray, label: np.ndarray, size: Tuple[int, int] = ATTENTION_PAPER_SIZE
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Image (bilinear) and label map (nearest) resized to ``size`` = (height, width)."""
    from PIL import Image

    height, width = size
    mode = "RGB" if image.ndim == 3 else "L"
    resized = np.asarray(Image.fromarray(image, mode=mode).resize((width, height), Image.BILINEAR))
    resized_label = np.asarray(Image.fromarray(label, mode="L").resize((width, height), Image.NEAREST))
    return resized, resized_label
