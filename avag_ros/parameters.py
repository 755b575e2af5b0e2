"""Every parameter of the grounding node, declared in one place with its description and range.

Read-only parameters take effect at configure; the others can be changed at run time and are validated by
the node's set-parameters callback. Defaults match config/grounding.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from avag_core.backends import BACKENDS
from avag_core.build import PRESETS

AUDIO_SOURCES = ("microphone", "file", "topic")
DEVICES_HELP = "auto, cpu, cuda or cuda:N (torch, onnxruntime); auto, cpu or gpu (openvino)"


@dataclass(frozen=True)
class Spec:
    name: str
    default: object
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        description = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        descriptor = ParameterDescriptor(name=self.name, description=description, read_only=self.read_only)
        if self.range is not None:
            if isinstance(self.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.range[0]),
                                                                      to_value=float(self.range[1]))]
            else:
                descriptor.integer_range = [IntegerRange(from_value=int(self.range[0]), to_value=int(self.range[1]),
                                                         step=1)]
        return descriptor


SPECS = (
    Spec("checkpoint", "", "Trained AVAGFormer checkpoint (.pt), or for the onnxruntime and openvino backends "
         "also an export folder (python -m avag_core.export). Empty: run `model` with RANDOM weights (tests and "
         "latency measurements only).", read_only=True),
    Spec("backend", "torch", "What runs the model: PyTorch, or the exported ONNX graphs on ONNX Runtime "
         "(TensorRT, CUDA, CPU) or OpenVINO (CPU, Intel GPU). A .pt checkpoint is exported once into the cache.",
         read_only=True, choices=BACKENDS),
    Spec("model", "avagformer_b0", "Preset used when no checkpoint is given.", read_only=True,
         choices=tuple(sorted(PRESETS))),
    Spec("device", "auto", f"Inference device: {DEVICES_HELP}.", read_only=True),
    Spec("precision", "fp32", "fp32, or fp16/bf16 autocast on CUDA (torch); fp16 with TensorRT (onnxruntime); "
         "fp16/bf16 on an OpenVINO GPU.", read_only=True, choices=("fp32", "fp16", "bf16")),
    Spec("use_compressed", False, "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.",
         read_only=True),
    Spec("autostart", True, "Configure and activate on start-up, so `ros2 run` just works.", read_only=True),
    Spec("threshold", 0.5, "Probability above which a pixel belongs to a mask.", range=(0.01, 0.99)),
    Spec("max_rate_hz", 5.0, "Upper bound on inferences per second; 0 means as fast as possible.",
         range=(0.0, 1000.0)),
    Spec("publish_probabilities", False, "Also publish affordance/*_probability (32FC1).", read_only=True),
    Spec("publish_overlay", True, "Also publish affordance/overlay (bgr8), the camera image tinted.",
         read_only=True),
    Spec("publish_when_silent", False, "Publish empty masks while no sound event is active (else publish nothing)."),
    Spec("audio.source", "microphone", "Where the sound comes from.", read_only=True, choices=AUDIO_SOURCES),
    Spec("audio.device", "", "sounddevice input device (name or index); empty: the system default.",
         read_only=True),
    Spec("audio.sample_rate", 16000, "Microphone sample rate in Hz (16000 avoids resampling).", read_only=True,
         range=(8000, 192000)),
    Spec("audio.channels", 1, "Microphone channels (mixed to mono).", read_only=True, range=(1, 32)),
    Spec("audio.file", "", "Clip played in a loop by the 'file' source.", read_only=True),
    Spec("audio.topic", "audio", "audio_common_msgs/AudioDataStamped topic of the 'topic' source (its AudioInfo "
         "is read from <topic>_info).", read_only=True),
    Spec("audio.window_s", 2.0, "Seconds of the latest audio given to the model.", read_only=True,
         range=(0.5, 19.2)),
    Spec("audio.min_level_db", -50.0, "A sound event is active while the 50 ms RMS level (dBFS) exceeds this.",
         range=(-120.0, 0.0)),
    Spec("audio.hold_s", 1.0, "How long a sound event stays active after the level last exceeded the minimum.",
         range=(0.05, 30.0)),
    Spec("audio.retry_s", 2.0, "Seconds between attempts to reopen a failed audio source.", read_only=True,
         range=(0.1, 60.0)),
)


# rclpy declares this one on every node; launch files set it like the node's own.
USE_SIM_TIME = Spec("use_sim_time", False, "Take ROS time from /clock (simulation, bag playback).")

# launch/grounding.launch.py argument -> the parameter it sets. An argument left empty sets nothing, so the
# parameter file's value stands.
LAUNCH_ARGUMENTS = {
    "checkpoint": "checkpoint", "backend": "backend", "model": "model", "device": "device",
    "precision": "precision", "use_compressed": "use_compressed", "threshold": "threshold",
    "max_rate_hz": "max_rate_hz",
    "publish_overlay": "publish_overlay", "audio_source": "audio.source", "audio_file": "audio.file",
    "use_sim_time": "use_sim_time",
}


def spec(name: str) -> Spec:
    found = next((s for s in (*SPECS, USE_SIM_TIME) if s.name == name), None)
    if found is None:
        raise KeyError(f"no parameter named {name!r}")
    return found


def parse_text(name: str, text: str) -> object:
    """A launch argument's text as the parameter's type; ValueError names the parameter and the bad text."""
    kind = type(spec(name).default)
    if kind is bool:
        if text.strip().lower() not in ("true", "false"):
            raise ValueError(f"{name} must be true or false, got {text!r}")
        return text.strip().lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, got {text!r}") from None


@dataclass(frozen=True)
class GroundingSettings:
    checkpoint: str
    backend: str
    model: str
    device: str
    precision: str
    use_compressed: bool
    autostart: bool
    threshold: float
    max_rate_hz: float
    publish_probabilities: bool
    publish_overlay: bool
    publish_when_silent: bool
    audio_source: str
    audio_device: str
    audio_sample_rate: int
    audio_channels: int
    audio_file: str
    audio_topic: str
    audio_window_s: float
    audio_min_level_db: float
    audio_hold_s: float
    audio_retry_s: float


def declare(node) -> None:
    for spec in SPECS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def read(node) -> GroundingSettings:
    return GroundingSettings(**{spec.name.replace(".", "_"): node.get_parameter(spec.name).value for spec in SPECS})


def check_choice(name: str, value: object) -> str | None:
    """The reason a value is not allowed, or None. Ranges and read-only are enforced by rclpy itself."""
    spec = next((s for s in SPECS if s.name == name), None)
    if spec is not None and spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    return None
