"""The demo's weights, an avagformer_b0 trained on the synthetic task (demo_avagformer_b0.md says how), by path.
No ROS here: the benches take the path from this module without loading rclpy."""
from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo_avagformer_b0.pt"
