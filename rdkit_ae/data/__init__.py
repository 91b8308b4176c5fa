"""Image sources (CIFAR-10, ``.npz``, folders, single files) and the torch datasets over them."""

from rdkit_ae.data.npz import load_npz
from rdkit_ae.data.sources import (
    IMAGE_SUFFIXES,
    ImageSet,
    image_pixel_limit,
    image_size,
    iter_images,
    load_images,
    read_image,
    to_tensor,
    to_uint8,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "image_pixel_limit",
    "image_size",
    "iter_images",
    "load_npz",
    "load_images",
    "read_image",
    "to_tensor",
    "to_uint8",
]
