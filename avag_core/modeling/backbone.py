"""PVT-v2 visual backbone, kept as timm's model so official weights load through timm's own key filter."""
from __future__ import annotations

import timm
import torch
from torch import nn

PVT_V2_VARIANTS = ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5")

# Stage 1 (stride 4) is computed by the network but, as in the released code, not used by the head.
USED_STAGES = (1, 2, 3)


class PVTBackbone(nn.Module):
    def __init__(self, variant: str = "pvt_v2_b5", drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if variant not in PVT_V2_VARIANTS:
            raise ValueError(f"unknown backbone {variant!r}; choose one of {PVT_V2_VARIANTS}")
        self.variant = variant
        self.body = timm.create_model(variant, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        self.out_channels = [self.body.feature_info[i]["num_chs"] for i in USED_STAGES]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,H,W] normalised images -> feature maps at strides 8, 16 and 32."""
        return self.body.forward_intermediates(images, indices=list(USED_STAGES), intermediates_only=True)
