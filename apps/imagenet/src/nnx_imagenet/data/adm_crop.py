"""ADM centre crop (guided-diffusion's `center_crop_arr`): the DiT/SiT/REPA ImageNet preprocessing.

1. While the short side is ≥ 2·res, halve both sides with a BOX filter (anti-aliased downsampling).
2. Resize with BICUBIC so that the short side equals res (long side rounded).
3. Crop the central res × res square.
"""

import numpy as np
from PIL import Image


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """Return the ADM centre crop of `pil_image` as a uint8 array `[image_size, image_size, C]`.

    This is guided-diffusion's `center_crop_arr` line for line (the image is converted to RGB by
    the caller if needed; a grayscale image gives `[image_size, image_size]`).
    """
    # Repeated 2× BOX downsampling while the short side is at least twice the target.
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    # BICUBIC resize so that the short side is exactly `image_size`.
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(
        tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC
    )
    # Centre crop.
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]
