"""The audio source the node's parameters ask for, and its start, retried until it works."""
from __future__ import annotations

from rclpy.clock import Clock, ClockType

from .audio.sources import AudioSource, FileSource, MicrophoneSource, TopicSource
from .parameters import GroundingSettings


def make_audio_source(node, settings: GroundingSettings) -> AudioSource:
    """Stamped with `node`'s ROS clock; a topic source subscribes through `node`. Raises ValueError on settings
    the source refuses (a missing file, say)."""
    # an event's clip (audio.window_s, its overhang and pre-roll) and the audio between two looks at the stream:
    # diagnostics look every second even when no frame comes
    buffer_s = max(settings.audio_window_s, settings.audio_hold_s) + 3.0
    now = lambda: node.get_clock().now().nanoseconds  # noqa: E731
    if settings.audio_source == "file":
        return FileSource(settings.audio_file, buffer_s, now)
    if settings.audio_source == "topic":
        return TopicSource(node, settings.audio_topic, settings.audio_info_topic, settings.audio_stamped,
                           buffer_s, now)
    return MicrophoneSource(settings.audio_device, settings.audio_sample_rate, settings.audio_channels, buffer_s, now)


class AudioRunner:
    """Runs the source from activate to deactivate: starts it, and while it has failed starts it again every
    `retry_s`. Each kind of failure is logged once (/diagnostics carries it meanwhile), and so is the recovery."""

    def __init__(self, node) -> None:
        self._node = node
        self._source: AudioSource | None = None
        self._retry_s = 0.0
        self._timer = None
        self._failure: str | None = None  # the last error logged

    def start(self, source: AudioSource, retry_s: float) -> None:
        self._source, self._retry_s = source, retry_s
        self._try_start()
        # steady: with use_sim_time and no /clock a ROS-time timer would never retry
        self._timer = self._node.create_timer(retry_s, self._retry, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def stop(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        if self._source is not None:
            self._source.stop()
            self._source = None

    def _retry(self) -> None:
        source = self._source
        if source is not None and not source.healthy() and not source.health.startswith("waiting"):
            self._try_start()

    def _try_start(self) -> None:
        try:
            self._source.start()
        except ValueError as error:
            if str(error) != self._failure:
                self._node.get_logger().error(f"audio source failed: {error}; retrying every {self._retry_s:g} s, "
                                              "quietly while it fails the same way")
            self._failure = str(error)
            return
        if self._failure is not None:
            self._node.get_logger().info(f"audio source recovered after: {self._failure}")
            self._failure = None
