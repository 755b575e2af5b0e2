"""VGGish audio encoder, laid out like the torchvggish port so `vggish-10086976.pth` loads by name."""
from __future__ import annotations

import torch
from torch import nn

EMBEDDING_DIM = 128


def _conv_stack() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 1
    for spec in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
        if spec == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = spec
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """[n,1,96,64] log-mel examples -> [n,128] non-negative embeddings (PCA post-processing is not used)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _conv_stack()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM), nn.ReLU(inplace=True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)
        # The TF original flattens in (H, W, C) order; the released weights expect that order.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)

# Log-mel value of the windows that pad a short clip up to the model's fixed window count.
PADDING_VALUE = 0.0
