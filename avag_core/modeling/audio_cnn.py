"""A light trainable audio encoder: the fallback when no pretrained VGGish file is at hand.

A randomly initialised, frozen VGGish maps every sound to nearly the same embedding (cosine 0.9995 between
categories), so a model trained on top of it cannot hear. This CNN has 0.1% of VGGish's parameters, trains with
the rest of the model and returns the same [n, 128] embedding, so everything downstream is unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .vggish import EMBEDDING_DIM

# Log-mel (log(mel + 0.01)) of speech-level sound spans about -4.6 (silence) to +4: centre and scale it so the
# first conv starts in its linear range.
LOG_MEL_CENTRE = -1.0
LOG_MEL_SCALE = 3.0


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class LogMelCNN(nn.Module):
    """[n, 1, 96, 64] log-mel examples -> [n, 128] embeddings.

    Four stride-2 conv blocks reduce (time 96, mel 64) to (6, 4); averaging over time only keeps where in the
    spectrum the energy sits, which is what tells a 150 Hz thud from a 5 kHz scrape. The output is batch-normalised
    so that different sounds give clearly different embeddings from the first step.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        channels = (1, *widths)
        self.features = nn.Sequential(*(_conv_block(a, b) for a, b in zip(channels, channels[1:])))
        mel_bins = 64 // 2 ** len(widths)
        self.embedding = nn.Sequential(nn.Linear(widths[-1] * mel_bins, EMBEDDING_DIM), nn.BatchNorm1d(EMBEDDING_DIM))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features((examples - LOG_MEL_CENTRE) / LOG_MEL_SCALE)  # [n, C, time, mel]
        return self.embedding(x.mean(2).flatten(1))
