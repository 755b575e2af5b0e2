from .avagformer import AVAGFormer, AVAGOutput

__all__ = ["AVAGFormer", "AVAGOutput"]
