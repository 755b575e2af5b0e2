"""The one configuration object that fully describes an AVAGFormer, its named presets, and the names of what can
run one. Plain Python: the ROS parameter table and the launch file import this without torch.

Checkpoints store the config as a plain dict (``dataclasses.asdict``), so a checkpoint can be rebuilt with nothing
else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

MixerBias = Literal["per_head", "per_token"]
AudioEncoder = Literal["vggish", "log_mel_cnn"]


@dataclass(frozen=True)
class AVAGFormerConfig:
    # Visual backbone: a timm PVT-v2 variant; stages 2-4 (strides 8, 16, 32) feed the head.
    backbone: str = "pvt_v2_b5"
    drop_path_rate: float = 0.1
    image_size: int = 512

    # Audio: 128-d embeddings of T log-mel windows, projected to `embed_dim`. "vggish" is the released encoder,
    # frozen, and needs its pretrained file to hear anything; "log_mel_cnn" is a light encoder that trains with
    # the model (for training without that file).
    num_audio_windows: int = 20
    audio_encoder: AudioEncoder = "vggish"
    freeze_audio_encoder: bool = True

    # Deformable transformer encoder over the three backbone levels.
    embed_dim: int = 256
    encoder_layers: int = 6
    encoder_heads: int = 8
    encoder_points: int = 4
    encoder_ffn_dim: int = 2048
    encoder_dropout: float = 0.1

    fpn_dim: int = 128

    # "per_head" is what the released code computes: a per-head scalar bias that softmax cancels (inert).
    # "per_token" is the paper's intent: the bias varies with each key token's own magnitude.
    mixer_heads: int = 8
    mixer_bias: MixerBias = "per_head"

    # Shared query generator and the learnable query embedding added to its output.
    num_queries: int = 300
    query_layers: int = 6
    query_heads: int = 8
    query_ffn_dim: int = 1024

    # Per-task decoders and mask heads.
    decoder_dim: int = 16
    decoder_heads: int = 4
    compressor_dim: int = 64

    # Initial probability of the final mask logits (their 1x1 conv's bias is set to logit(p)), as detectors do for
    # rare positives; None keeps PyTorch's default init, as released. Only the initialisation depends on it.
    foreground_prior: float | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.mixer_bias not in ("per_head", "per_token"):
            raise ValueError(f"mixer_bias must be 'per_head' or 'per_token', got {self.mixer_bias!r}")
        if self.audio_encoder not in ("vggish", "log_mel_cnn"):
            raise ValueError(f"audio_encoder must be 'vggish' or 'log_mel_cnn', got {self.audio_encoder!r}")
        if self.audio_encoder == "log_mel_cnn" and self.freeze_audio_encoder:
            raise ValueError("the log_mel_cnn audio encoder has no pretrained weights: set freeze_audio_encoder=False")
        if self.foreground_prior is not None and not 0.0 < self.foreground_prior < 1.0:
            raise ValueError(f"foreground_prior must be in (0, 1), got {self.foreground_prior}")
        for name in ("num_audio_windows", "encoder_layers", "num_queries", "query_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.encoder_heads or self.embed_dim % self.mixer_heads:
            raise ValueError("embed_dim must be divisible by encoder_heads and mixer_heads")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AVAGFormerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AVAGFormer config keys: {unknown}")
        return cls(**values)


PRESETS: dict[str, AVAGFormerConfig] = {
    "avagformer_b5": AVAGFormerConfig(backbone="pvt_v2_b5"),
    "avagformer_b2": AVAGFormerConfig(backbone="pvt_v2_b2"),
    "avagformer_b0": AVAGFormerConfig(backbone="pvt_v2_b0", encoder_layers=3, encoder_ffn_dim=1024,
                                      query_layers=3, num_queries=100),
}

# What runs a model (avag_core.inference.backends) and at which precisions.
BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISION_NAMES = ("fp32", "fp16", "bf16", "int8")

# Image-feature reuse for still views (avag_core.inference.view_reuse), the node's reuse.* defaults. The view change
# under which a frame keeps the keyframe's image side lies between what sensor noise makes of a still 640x480 view
# (0.08 at sigma 2, 0.12 at sigma 3) and what an object moved by 2.5 % of the width makes (0.2 to 0.45), as
# bench/reuse.py measures; the age at which a keyframe is renewed.
REUSE_MAX_CHANGE = 0.15
REUSE_MAX_AGE_S = 2.0
