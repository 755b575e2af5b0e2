"""AVAGFormer audio-visual affordance grounding: model, audio front-end, data and predictor. No ROS here."""
from .build import PRESETS, build_model
from .config import AVAGFormerConfig
from .predictor import AffordancePrediction, AffordancePredictor

__all__ = ["PRESETS", "AVAGFormerConfig", "AffordancePrediction", "AffordancePredictor", "build_model"]
