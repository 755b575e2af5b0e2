"""Joint image/mask augmentation (spec section 9): one set of random parameters for the image and both masks."""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..image import IMAGENET_MEAN, IMAGENET_STD


def training_transform(size: int) -> v2.Compose:
    """Affine (rotation +-20 deg, scale 0.5-1.0, x-shear +-10 deg, nearest, fill 0), resize, horizontal flip,
    colour jitter 0.2/0.2/0.2/0.1 on the image only, ImageNet normalisation. Masks are resized nearest."""
    return v2.Compose([
        v2.RandomAffine(degrees=20, scale=(0.5, 1.0), shear=(-10, 10), fill=0),
        v2.Resize((size, size), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def evaluation_transform(size: int) -> v2.Compose:
    return v2.Compose([
        v2.Resize((size, size), antialias=True),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def apply_joint(transform: v2.Compose, image: torch.Tensor, function_mask: torch.Tensor,
                dependency_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """image uint8 [3, H, W]; masks bool/uint8 [1, H, W] -> image float [3, S, S], masks float {0, 1} [1, S, S]."""
    out_image, out_function, out_dependency = transform(
        tv_tensors.Image(image), tv_tensors.Mask(function_mask.to(torch.uint8)),
        tv_tensors.Mask(dependency_mask.to(torch.uint8)))
    return out_image.as_subclass(torch.Tensor), out_function.as_subclass(torch.Tensor), \
        out_dependency.as_subclass(torch.Tensor)
