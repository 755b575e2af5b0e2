"""Every parameter of the grounding node, declared in one place with its description, type, range and choices.

Read-only parameters take effect at configure; the others can be changed at run time. One rule checks a value
wherever it comes from (the launch file, --ros-args, the params file, `ros2 param set`): `Spec.accept`. It takes
an integer where a double is declared, as users type `max_rate_hz:=0`. A bad start-up value never stops the
process: the node declares the default, and configure reports the parameter and why. Defaults match
config/grounding.yaml. No torch here: the launch file imports this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from avag_core.config import BACKENDS, PRECISION_NAMES, PRESETS, REUSE_MAX_AGE_S, REUSE_MAX_CHANGE

AUDIO_SOURCES = ("microphone", "file", "topic")
# Sound events' defaults, both measured (README, "Sound events"): the shortest span at which the demo's weights
# ground their sounds right, and the change score that separates joined sounds from a sound's own continuation.
MIN_EVENT_S = 0.3
CHANGE_THRESHOLD = 1.0
DEVICES_HELP = "auto, cpu, cuda or cuda:N (torch, onnxruntime); auto, cpu or gpu (openvino)"


@dataclass(frozen=True)
class Spec:
    name: str
    default: object
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    # A text that may be a number: `-p audio.device:=2` reaches the node as the integer 2, which means the text "2"
    integers_as_text: bool = False

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

    def accept(self, value: object) -> object:
        """`value` as this parameter's type, or ValueError naming the parameter, what it takes and what it got."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and self.integers_as_text and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if type(value) is not kind:
            raise ValueError(f"parameter '{self.name}' takes {_TYPE_NAMES[kind]}, got {value!r}")
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            raise ValueError(f"parameter '{self.name}' is out of range: it takes {self.range[0]:g} to "
                             f"{self.range[1]:g}, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"parameter '{self.name}' must be one of {', '.join(self.choices)}, got {value!r}")
        return value


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}

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
    Spec("precision", "fp32", "fp32; fp16/bf16 autocast on CUDA (torch); fp16 with TensorRT (onnxruntime); bf16 "
         "on a CPU with bf16 instructions or an Intel GPU, fp16 on the GPU, int8 from an export made with --quantize "
         "int8 (openvino).", read_only=True, choices=PRECISION_NAMES),
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
         read_only=True, integers_as_text=True),
    Spec("audio.sample_rate", 16000, "Microphone sample rate in Hz (16000 avoids resampling).", read_only=True,
         range=(8000, 192000)),
    Spec("audio.channels", 1, "Microphone channels (mixed to mono).", read_only=True, range=(1, 32)),
    Spec("audio.file", "", "Clip played in a loop by the 'file' source.", read_only=True),
    Spec("audio.topic", "", "Audio topic of the 'topic' source; empty: the name audio_capture (audio_common) "
         "publishes that type on, audio_stamped or, with audio.stamped false, audio.", read_only=True),
    Spec("audio.stamped", True, "The 'topic' source reads audio_common_msgs/AudioDataStamped (true) or AudioData "
         "(false). Samples are stamped on arrival either way: audio_capture stamps with the GStreamer clock, not "
         "ROS time.", read_only=True),
    Spec("audio.info_topic", "audio_info", "audio_common_msgs/AudioInfo topic saying how the 'topic' source's "
         "audio is encoded (coding_format wave; S16LE, S32LE, F32LE or U8); the last one received is used.",
         read_only=True),
    Spec("audio.window_s", 2.0, "The most a sound event's clip holds: under one 0.96 s log-mel window, all of "
         "the event so far; then the last whole windows from the event's start that fit in this many seconds (two "
         "at 2.0); below 0.96, the latest audio of this length.", read_only=True, range=(0.5, 19.2)),
    Spec("audio.min_level_db", -50.0, "A sound event begins when the 50 ms RMS level (dBFS) reaches this after "
         "quiet.", range=(-120.0, 0.0)),
    Spec("audio.hold_s", 1.0, "A sound event ends this many seconds after the level last reached "
         "audio.min_level_db.", range=(0.05, 30.0)),
    Spec("audio.min_event_s", MIN_EVENT_S, "No masks until the sound event holds this many seconds of audio from "
         "its onset.", range=(0.0, 19.2)),
    Spec("audio.change_threshold", CHANGE_THRESHOLD, "A sound that changes into another without quiet between "
         "begins a new event when the spectral envelope of its last 0.3 s lies this far from the event's before "
         "them (in units of the event's own spread). Lower: changes are found sooner and more often within one "
         "sound; 0 turns it off.", range=(0.0, 100.0)),
    Spec("audio.retry_s", 2.0, "Seconds between attempts to reopen a failed audio source.", read_only=True,
         range=(0.1, 60.0)),
    Spec("depth.enabled", False, "Subscribe to depth/image (16UC1 mm or 32FC1 m, aligned to the colour image) and "
         "depth/camera_info, and publish each region's 3D point, cloud, the function region's approach pose and "
         "RViz markers.", read_only=True),
    Spec("depth.max_offset_s", 0.05, "Largest stamp difference between a colour frame and the depth image paired "
         "with it.", range=(0.0, 1.0)),
    Spec("depth.min_points", 50, "Fewest pixels with valid depth a region needs to get 3D outputs.",
         range=(1, 1_000_000)),
    Spec("depth.min_m", 0.1, "Nearest valid depth in metres.", range=(0.0, 100.0)),
    Spec("depth.max_m", 5.0, "Farthest valid depth in metres.", range=(0.0, 100.0)),
    Spec("depth.max_cloud_points", 5000, "Most points per published cloud (evenly subsampled).",
         range=(1, 1_000_000)),
    Spec("depth.erode_px", 3, "The mask is eroded by this many pixels before its depth is read, so that depth at "
         "object edges, which often belongs to the background, is left out.", range=(0, 50)),
    Spec("tf.enabled", True, "With depth.enabled, broadcast each frame's 3D targets on /tf as frames "
         "<tf.prefix>function (the function pose) and <tf.prefix>dependency (the dependency point, identity "
         "rotation), children of the depth image's optical frame. Without depth it does nothing.", read_only=True),
    Spec("tf.prefix", "affordance_", "Prefix of the TF frames' names (one per node, e.g. left_affordance_).",
         read_only=True),
    Spec("reuse.max_change", REUSE_MAX_CHANGE, "A frame whose view differs from the last keyframe's by less than "
         "this keeps the keyframe's image features and runs only the audio and the mask head: mean absolute "
         "difference, in grey levels (0-255), of the two frames shrunk to 32x24 grey. 0 turns reuse off.",
         range=(0.0, 255.0)),
    Spec("reuse.max_age_s", REUSE_MAX_AGE_S, "A keyframe this old is renewed from the next frame of its view, beside "
         "the stream (the old one stands until its successor is ready, at most twice this age); 0 turns reuse off.",
         range=(0.0, 3600.0)),
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
    "use_sim_time": "use_sim_time", "depth_enabled": "depth.enabled",
    # A USB microphone and a camera on an arm: what a robot's launch line sets beside the camera's topics
    "audio_device": "audio.device", "audio_sample_rate": "audio.sample_rate", "reuse_max_change": "reuse.max_change",
}


def spec(name: str) -> Spec:
    found = next((s for s in (*SPECS, USE_SIM_TIME) if s.name == name), None)
    if found is None:
        raise KeyError(f"no parameter named {name!r}")
    return found


def parse_text(name: str, text: str) -> object:
    """A launch argument's text as the parameter's value; ValueError names the parameter, the rule and the text."""
    rule = spec(name)
    kind = type(rule.default)
    if kind is bool:
        if text.strip().lower() not in ("true", "false"):
            raise ValueError(f"parameter '{name}' takes true or false, got {text!r}")
        return text.strip().lower() == "true"
    try:
        value = float(text) if kind is float else kind(text)
    except ValueError:
        raise ValueError(f"parameter '{name}' takes {_TYPE_NAMES[kind]}, got {text!r}") from None
    return rule.accept(value)


def node_logger_name(namespace: str, node_name: str = "affordance_grounding") -> str:
    """The name rcl gives the node's logger: its fully qualified name with dots, e.g. robot.affordance_grounding."""
    return ".".join(part for part in (*namespace.split("/"), node_name) if part)


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
    audio_stamped: bool
    audio_info_topic: str
    audio_window_s: float
    audio_min_level_db: float
    audio_hold_s: float
    audio_min_event_s: float
    audio_change_threshold: float
    audio_retry_s: float
    depth_enabled: bool
    depth_max_offset_s: float
    depth_min_points: int
    depth_min_m: float
    depth_max_m: float
    depth_max_cloud_points: int
    depth_erode_px: int
    tf_enabled: bool
    tf_prefix: str
    reuse_max_change: float
    reuse_max_age_s: float


def declare(node) -> dict[str, str]:
    """Declare every parameter; returns, per parameter whose start-up value was refused, why.

    Start-up values are checked here rather than by rclpy, which would raise out of the node's constructor and end
    the process; a refused one leaves the parameter at its default. rclpy keeps the values given on the command
    line and in parameter files in `_parameter_overrides` and offers no public way to read them.
    """
    overrides = node._parameter_overrides
    refused = {}
    for rule in SPECS:
        value = rule.default
        if rule.name in overrides:
            try:
                value = rule.accept(overrides[rule.name].value)
            except ValueError as error:
                refused[rule.name] = str(error)
        node.declare_parameter(rule.name, value, rule.descriptor(), ignore_override=True)
    return refused


def coerce(changed: list) -> list:
    """Pre-set callback: an integer given for a double parameter becomes a double, so `ros2 param set NODE
    max_rate_hz 2` is not refused for its type."""
    from rclpy.parameter import Parameter

    doubles = {rule.name for rule in SPECS if isinstance(rule.default, float)}
    return [Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            if p.name in doubles and p.type_ == Parameter.Type.INTEGER else p for p in changed]


def current_values(node) -> dict[str, object]:
    return {rule.name: node.get_parameter(rule.name).value for rule in SPECS}


def settings_from(values: dict[str, object]) -> GroundingSettings:
    return GroundingSettings(**{rule.name.replace(".", "_"): values[rule.name] for rule in SPECS})


def read(node) -> GroundingSettings:
    return settings_from(current_values(node))


def check_together(settings: GroundingSettings) -> str | None:
    """The reason a full set of values cannot hold together, or None.

    The one rule for configure and for run-time changes alike: a change is judged by the values it would leave,
    so `depth.min_m` 6 is refused while `depth.max_m` is 5, and both can move in one atomic set."""
    if settings.tf_enabled and settings.depth_enabled and not valid_frame_prefix(settings.tf_prefix):
        return (f"parameter 'tf.prefix': {settings.tf_prefix!r} cannot begin a TF frame name (letters, digits and "
                "underscores, no leading slash)")
    if settings.depth_enabled and settings.depth_min_m >= settings.depth_max_m:
        return (f"parameters 'depth.min_m', 'depth.max_m': {settings.depth_min_m:g} m is not below "
                f"{settings.depth_max_m:g} m")
    return None


def valid_frame_prefix(prefix: str) -> bool:
    """Whether `prefix + "function"` is a valid TF frame id: tf2 refuses a leading slash, and tools resolve names
    of letters, digits and underscores, with inner slashes."""
    return re.fullmatch(r"([A-Za-z0-9_]+/)*[A-Za-z0-9_]*", prefix) is not None


def check_change(node, changed: list) -> str | None:
    """The reason a run-time change is not allowed, or None: each value by its own rule, then the values the change
    would leave, together. Read-only is enforced by rclpy itself."""
    for parameter in changed:
        rule = next((s for s in SPECS if s.name == parameter.name), None)
        if rule is not None:
            try:
                rule.accept(parameter.value)
            except ValueError as error:
                return str(error)
    values = current_values(node)
    values.update({parameter.name: parameter.value for parameter in changed if parameter.name in values})
    return check_together(settings_from(values))


def validate_change(node, changed: list) -> SetParametersResult:
    """The node's on-set-parameters callback."""
    reason = check_change(node, changed)
    return SetParametersResult(successful=reason is None, reason=reason or "")
