"""Image sources (CIFAR-10, ``.npz``, folders, single files) and the torch datasets over them."""

from rdkit_ae.data.sources import (
    IMAGE_SUFFIXES,
    ImageSet,
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
    "image_size",
    "iter_images",
    "load_images",
    "read_image",
    "to_tensor",
    "to_uint8",
]
