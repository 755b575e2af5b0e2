"""Stream images (and optionally depth and a sound) as if an RGB-D camera and a microphone were attached.

    ros2 run avag_ros sample_player --image photo.jpg [--image more.jpg | --image folder/] [--audio clip.mp3
                                    [--audio-format S16LE] [--audio-channels 1]]
                                    [--depth depth.png --camera-info camera.yaml] [--rate 15]
                                    [--frame-id camera] [--encoding bgr8|rgb8|jpeg] [--duration 0]

Images go to `image` (sensor_msgs/Image) or, with --encoding jpeg, to `image/compressed`, stamped with the
current time, cycling through the files. --depth (a 16-bit PNG in millimetres, or a .npy in metres, aligned to the
images) goes with each image to `depth/image` (16UC1) and --camera-info (a ROS calibration YAML: image_width,
image_height, camera_matrix) to `depth/camera_info`, with the image's stamp and frame. --audio publishes the clip
in real time, looping, exactly as audio_common's audio_capture does with format:=wave: audio_common_msgs/AudioData
on `audio`, AudioDataStamped on `audio_stamped` (stamped with a wall clock started with the stream, as GStreamer's
pipeline clock is, not ROS time) and AudioInfo on `audio_info` at start and every 5 s, all with the default QoS
(reliable, volatile; depth 10, 1 for the info). --audio-format (any the node decodes: S16LE, S32LE, F32LE, U8 and
the big-endian S16BE, S32BE, F32BE) and --audio-channels choose the PCM layout; the clip's sample rate is kept.
Without audio_common_msgs (scripts/setup.sh builds it), give the clip to the node's `file` source instead.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from avag_core.audio import load_audio
from avag_core.image import load_image

from ..audio.pcm import PCM_FORMATS, float_to_pcm
from ..audio.sources import audio_common_available
from ..depth.geometry import Intrinsics
from ..messages.depth import intrinsics_to_camera_info, metres_to_depth_image
from ..messages.images import rgb_to_image

if TYPE_CHECKING:
    from audio_common_msgs.msg import AudioInfo

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_CHUNK_S = 0.05
AUDIO_INFO_PERIOD_S = 5.0  # audio_capture's
# audio_capture reports its mp3 encoder's bitrate setting (kbit/s) whatever the format
AUDIO_CAPTURE_BITRATE = 192


def image_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() \
            else [path]
    if not files:
        raise ValueError("no images found in " + ", ".join(paths))
    return files


class SamplePlayer(Node):
    def __init__(self, images: list[np.ndarray], rate_hz: float, frame_id: str, encoding: str,
                 audio: tuple[bytes, int, AudioInfo] | None = None,
                 depth: tuple[np.ndarray, Intrinsics] | None = None) -> None:
        """`audio`: what `audio_stream` returns. `depth`: metres aligned to the images, and the camera that sees
        them."""
        super().__init__("sample_player")
        if rate_hz <= 0:
            raise ValueError(f"--rate must be positive, got {rate_hz}")
        self.frame_id, self.encoding = frame_id, encoding
        self.images = images
        self.jpegs = [cv2.imencode(".jpg", cv2.cvtColor(i, cv2.COLOR_RGB2BGR))[1].tobytes() for i in images] \
            if encoding == "jpeg" else None
        self.published = 0
        if encoding == "jpeg":
            self.publisher = self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        else:
            self.publisher = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.depth = depth
        if depth is not None:
            self.depth_publisher = self.create_publisher(Image, "depth/image", qos_profile_sensor_data)
            self.info_publisher = self.create_publisher(CameraInfo, "depth/camera_info", qos_profile_sensor_data)
        self.create_timer(1.0 / rate_hz, self._publish_image)
        if audio is not None:
            self._start_audio(*audio)

    def _publish_image(self) -> None:
        header = Header(frame_id=self.frame_id, stamp=self.get_clock().now().to_msg())
        if self.depth is not None:  # before the image, as a camera's aligned depth is usually ready first
            depth_m, intrinsics = self.depth
            self.info_publisher.publish(intrinsics_to_camera_info(intrinsics, header))
            self.depth_publisher.publish(metres_to_depth_image(depth_m, "16UC1", header))
        index = self.published % len(self.images)
        if self.jpegs is not None:
            msg = CompressedImage(header=header, format="jpeg")
            msg.data = self.jpegs[index]
        else:
            msg = rgb_to_image(self.images[index], self.encoding, header)
        self.publisher.publish(msg)
        self.published += 1

    def _start_audio(self, pcm: bytes, frame_bytes: int, info: AudioInfo) -> None:
        from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo

        data_publisher = self.create_publisher(AudioData, "audio", QoSProfile(depth=10))
        stamped_publisher = self.create_publisher(AudioDataStamped, "audio_stamped", QoSProfile(depth=10))
        info_publisher = self.create_publisher(AudioInfo, "audio_info", QoSProfile(depth=1))
        info_publisher.publish(info)
        self.create_timer(AUDIO_INFO_PERIOD_S, lambda: info_publisher.publish(info))
        chunk_bytes = max(1, int(AUDIO_CHUNK_S * info.sample_rate)) * frame_bytes
        started_ns, started = time.time_ns(), time.monotonic()
        sent = [0]  # bytes published since the start

        def publish_due_chunks() -> None:
            """Paced by the monotonic clock, so that late timer ticks catch up instead of slowing the stream."""
            due = int((time.monotonic() - started) * info.sample_rate) * frame_bytes
            while sent[0] + chunk_bytes <= due:
                offset = sent[0] % len(pcm)
                data = (pcm[offset:] + pcm)[:chunk_bytes] if offset + chunk_bytes > len(pcm) else \
                    pcm[offset:offset + chunk_bytes]
                stamped = AudioDataStamped()
                stamped.header.stamp = Time(nanoseconds=started_ns + sent[0] // frame_bytes * 10**9
                                            // info.sample_rate).to_msg()
                stamped.audio.data = data
                data_publisher.publish(AudioData(data=data))
                stamped_publisher.publish(stamped)
                sent[0] += chunk_bytes

        self.create_timer(AUDIO_CHUNK_S / 2, publish_due_chunks)


def audio_stream(path: str, sample_format: str, channels: int | None) -> tuple[bytes, int, AudioInfo]:
    """The clip as audio_capture would publish it: PCM bytes, bytes per frame, and its AudioInfo."""
    from audio_common_msgs.msg import AudioInfo

    waveform, rate = load_audio(path)
    channels = channels or waveform.shape[1]
    if not 1 <= channels <= 255:
        raise ValueError(f"--audio-channels must be 1 to 255, got {channels}")
    pcm = float_to_pcm(waveform.mean(axis=1), sample_format, channels)  # mono, repeated in each channel
    info = AudioInfo(channels=channels, sample_rate=rate, sample_format=sample_format,
                     bitrate=AUDIO_CAPTURE_BITRATE, coding_format="wave")
    return pcm, len(pcm) // waveform.shape[0], info


def load_depth(path: str) -> np.ndarray:
    """A depth file -> HxW float32 metres: .npy holds metres, an image 16-bit millimetres (0: no measurement)."""
    if path.endswith(".npy"):
        try:
            return np.load(path).astype(np.float32)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read depth {path}: {error}") from error
    depth = cv2.imread(path, cv2.IMREAD_ANYDEPTH)
    if depth is None or depth.dtype != np.uint16:
        raise ValueError(f"depth {path} is not a 16-bit image (millimetres) or a .npy (metres)")
    return np.where(depth > 0, depth / 1000.0, np.nan).astype(np.float32)


def load_camera_yaml(path: str) -> Intrinsics:
    """The ROS calibration format (camera_calibration's, camera_info_manager's)."""
    import yaml

    try:
        calibration = yaml.safe_load(Path(path).read_text())
        k = calibration["camera_matrix"]["data"]
        return Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(calibration["image_width"]),
                          int(calibration["image_height"]))
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read camera calibration {path}: {error}") from error


def main(args: list[str] | None = None) -> int:
    argv = rclpy.utilities.remove_ros_args(args if args is not None else sys.argv)[1:]
    parser = argparse.ArgumentParser(prog="sample_player", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", action="append", required=True, help="image file or folder (repeatable)")
    parser.add_argument("--audio", help="clip to publish as audio_capture does (needs audio_common_msgs)")
    parser.add_argument("--audio-format", default="S16LE", choices=sorted(PCM_FORMATS),
                        help="PCM sample format of --audio (default S16LE, audio_capture's)")
    parser.add_argument("--audio-channels", type=int, help="channels of --audio (default: the clip's)")
    parser.add_argument("--rate", type=float, default=15.0, help="images per second (default 15)")
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--encoding", default="bgr8", choices=["bgr8", "rgb8", "jpeg"])
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    parser.add_argument("--depth", help="depth aligned to the images: 16-bit PNG in millimetres or .npy in metres")
    parser.add_argument("--camera-info", help="ROS calibration YAML of the camera (needed with --depth)")
    options = parser.parse_args(argv)
    try:
        images = [load_image(p) for p in image_files(options.image)]
        audio = None
        if options.audio:
            if not audio_common_available():
                raise ValueError("--audio needs audio_common_msgs (apt install ros-$ROS_DISTRO-audio-common-msgs); "
                                 "without it, run the node with -p audio.source:=file -p audio.file:=CLIP")
            audio = audio_stream(options.audio, options.audio_format, options.audio_channels)
        depth = None
        if options.depth or options.camera_info:
            if not (options.depth and options.camera_info):
                raise ValueError("--depth and --camera-info go together")
            depth = (load_depth(options.depth), load_camera_yaml(options.camera_info))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rclpy.init(args=args)
    node = SamplePlayer(images, options.rate, options.frame_id, options.encoding, audio, depth)
    deadline = time.monotonic() + options.duration if options.duration > 0 else None
    try:
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
