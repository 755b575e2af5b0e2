"""Stream images (and optionally a sound) as if a camera and a microphone were attached.

    ros2 run avag_ros sample_player --image photo.jpg [--image more.jpg | --image folder/] [--audio clip.mp3]
                                    [--rate 15] [--frame-id camera] [--encoding bgr8|rgb8|jpeg] [--duration 0]

Images go to `image` (sensor_msgs/Image) or, with --encoding jpeg, to `image/compressed`, stamped with the
current time, cycling through the files. --audio publishes the clip in real time on `audio` as
audio_common_msgs/AudioDataStamped (16-bit PCM, with AudioInfo on `audio_info`) for the node's `topic` audio
source; without audio_common installed, give the clip to the node's `file` source instead.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from avag_core.audio import load_audio
from avag_core.image import load_image

from .audio_sources import audio_common_available
from .conversions import rgb_to_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_CHUNK_S = 0.05


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
                 audio: tuple[np.ndarray, int] | None = None) -> None:
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
        self.create_timer(1.0 / rate_hz, self._publish_image)
        if audio is not None:
            self._start_audio(*audio)

    def _publish_image(self) -> None:
        header = Header(frame_id=self.frame_id, stamp=self.get_clock().now().to_msg())
        index = self.published % len(self.images)
        if self.jpegs is not None:
            msg = CompressedImage(header=header, format="jpeg")
            msg.data = self.jpegs[index]
        else:
            msg = rgb_to_image(self.images[index], self.encoding, header)
        self.publisher.publish(msg)
        self.published += 1

    def _start_audio(self, waveform: np.ndarray, rate: int) -> None:
        from audio_common_msgs.msg import AudioDataStamped, AudioInfo

        pcm = (np.clip(waveform.mean(axis=1), -1, 1) * 32767).astype("<i2")
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.create_publisher(AudioInfo, "audio_info", latched).publish(
            AudioInfo(channels=1, sample_rate=rate, sample_format="S16LE", coding_format="wave"))
        audio_publisher = self.create_publisher(AudioDataStamped, "audio", qos_profile_sensor_data)
        chunk = int(AUDIO_CHUNK_S * rate)
        position = [0]

        def publish_chunk() -> None:
            msg = AudioDataStamped()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.audio.data = np.take(pcm, np.arange(position[0], position[0] + chunk), mode="wrap").tobytes()
            position[0] = (position[0] + chunk) % pcm.size
            audio_publisher.publish(msg)

        self.create_timer(AUDIO_CHUNK_S, publish_chunk)


def main(args: list[str] | None = None) -> int:
    argv = rclpy.utilities.remove_ros_args(args if args is not None else sys.argv)[1:]
    parser = argparse.ArgumentParser(prog="sample_player", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", action="append", required=True, help="image file or folder (repeatable)")
    parser.add_argument("--audio", help="clip to publish on `audio` (needs audio_common_msgs)")
    parser.add_argument("--rate", type=float, default=15.0, help="images per second (default 15)")
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--encoding", default="bgr8", choices=["bgr8", "rgb8", "jpeg"])
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    options = parser.parse_args(argv)
    try:
        images = [load_image(p) for p in image_files(options.image)]
        audio = None
        if options.audio:
            if not audio_common_available():
                raise ValueError("--audio needs audio_common_msgs (apt install ros-$ROS_DISTRO-audio-common-msgs); "
                                 "without it, run the node with -p audio.source:=file -p audio.file:=CLIP")
            audio = load_audio(options.audio)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rclpy.init(args=args)
    node = SamplePlayer(images, options.rate, options.frame_id, options.encoding, audio)
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
