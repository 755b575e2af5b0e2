"""Where the node's sound comes from: a microphone, a looping file, or a ROS topic, behind one interface.

Every source writes mono float32 blocks into a `RingBuffer` stamped with ROS time; the node reads the latest
seconds from it. Sources never raise out of their threads: failures go to `health`, and the node retries.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from avag_core.audio import load_audio

Clock = Callable[[], int]  # ROS time now, in nanoseconds

SILENCE_DB = -120.0


class RingBuffer:
    """The last `capacity_s` seconds of mono audio at one sample rate, thread-safe."""

    def __init__(self, sample_rate: int, capacity_s: float) -> None:
        self.sample_rate = sample_rate
        self._data = np.zeros(max(1, int(round(capacity_s * sample_rate))), np.float32)
        self._written = 0  # samples written since the start, ever
        self._last_stamp_ns = 0
        self._lock = threading.Lock()

    @property
    def written(self) -> int:
        return self._written

    @property
    def last_stamp_ns(self) -> int:
        return self._last_stamp_ns

    def write(self, samples: np.ndarray, stamp_ns: int) -> None:
        """Append mono samples; `stamp_ns` is the ROS time of the last one."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        total = samples.size  # all of them count as written, even where a block overflows the ring
        samples = samples[-self._data.size:]
        with self._lock:
            start = (self._written + total - samples.size) % self._data.size
            end = start + samples.size
            if end <= self._data.size:
                self._data[start:end] = samples
            else:
                split = self._data.size - start
                self._data[start:] = samples[:split]
                self._data[:end - self._data.size] = samples[split:]
            self._written += total
            self._last_stamp_ns = stamp_ns

    @property
    def capacity(self) -> int:
        """How many of the last samples the ring holds."""
        return self._data.size

    def latest(self, seconds: float) -> np.ndarray:
        """The most recent `seconds` of audio (less if not yet recorded)."""
        with self._lock:
            count = min(int(round(seconds * self.sample_rate)), self._written, self._data.size)
            return self._copy(self._written - count, self._written)

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the stream, counted from its first sample. Raises ValueError for samples that
        are not written yet or no longer held."""
        with self._lock:
            if not self._written - self._data.size <= start <= end <= self._written:
                raise ValueError(f"samples {start}-{end} are not in the ring, which holds "
                                 f"{max(0, self._written - self._data.size)}-{self._written}")
            return self._copy(start, end)

    def _copy(self, start: int, end: int) -> np.ndarray:
        first, count = start % self._data.size, end - start
        if first + count <= self._data.size:
            return self._data[first:first + count].copy()
        return np.concatenate((self._data[first:], self._data[:first + count - self._data.size]))

    def stamp_of(self, index: int) -> int:
        """The time of sample `index` on the clock that stamps the blocks, from the stamp of the last one written
        (the rate apart)."""
        return self.stamps_of(index)[0]

    def stamps_of(self, *indices: int) -> tuple[int, ...]:
        """stamp_of for several samples from one block's stamp: each block's stamp jitters with the clock that
        read it, so times taken from two blocks may be a little nearer or farther apart than their samples."""
        with self._lock:
            return tuple(self._last_stamp_ns - round((self._written - 1 - index) * 1e9 / self.sample_rate)
                         for index in indices)


class AudioSource(ABC):
    """Start, stop, and a buffer to read from. `health` is 'ok' or the last error."""

    def __init__(self, sample_rate: int, buffer_s: float, clock: Clock) -> None:
        self.buffer = RingBuffer(sample_rate, buffer_s)
        self.clock = clock
        self.health = "not started"

    @property
    def sample_rate(self) -> int:
        return self.buffer.sample_rate

    @abstractmethod
    def start(self) -> None:
        """Open the device/file/topic; raises ValueError if it cannot."""

    @abstractmethod
    def stop(self) -> None: ...

    def healthy(self) -> bool:
        return self.health == "ok"


class MicrophoneSource(AudioSource):
    """PortAudio capture through sounddevice, mixed to mono."""

    def __init__(self, device: str, sample_rate: int, channels: int, buffer_s: float, clock: Clock) -> None:
        super().__init__(sample_rate, buffer_s, clock)
        self.device = int(device) if device.strip().isdigit() else (device or None)
        self.channels = channels
        self._stream = None

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        self.buffer.write(indata.mean(axis=1), self.clock())
        if status.input_overflow:
            self.health = "ok (input overflow: samples were dropped)"

    def start(self) -> None:
        self.stop()
        try:
            import sounddevice  # here, and inside the try: without the PortAudio library it raises OSError

            self._stream = sounddevice.InputStream(device=self.device, channels=self.channels,
                                                   samplerate=self.sample_rate, dtype="float32",
                                                   callback=self._callback, blocksize=int(self.sample_rate * 0.02))
            self._stream.start()
        except Exception as error:  # PortAudio reports missing devices and bad formats with several types
            self._stream = None
            self.health = f"microphone {self.device!r} failed to open: {error}"
            raise ValueError(self.health) from error
        self.health = "ok"

    def check(self) -> None:
        """Notice a device that disappeared while streaming."""
        if self._stream is not None and not self._stream.active:
            self.health = f"microphone {self.device!r} stopped delivering audio"

    def healthy(self) -> bool:
        self.check()
        return self.health.startswith("ok")

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.abort()
                self._stream.close()
            except Exception:  # the device may already be gone; closing must not fail
                pass
            self._stream = None


class FileSource(AudioSource):
    """Plays a clip in a loop, in real time, as if a microphone heard it."""

    BLOCK_S = 0.02

    def __init__(self, path: str, buffer_s: float, clock: Clock) -> None:
        if not path:
            raise ValueError("audio.source is 'file' but audio.file is empty")
        waveform, rate = load_audio(path)
        self.samples = waveform.mean(axis=1).astype(np.float32)
        super().__init__(rate, buffer_s, clock)
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _play(self) -> None:
        block = max(1, int(self.BLOCK_S * self.sample_rate))
        position = 0
        started = time.monotonic()
        played = 0
        while not self._stop.is_set():
            chunk = np.take(self.samples, np.arange(position, position + block), mode="wrap")
            position = (position + block) % self.samples.size
            self.buffer.write(chunk, self.clock())
            played += block
            delay = started + played / self.sample_rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def start(self) -> None:
        self.stop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._play, name="file_audio", daemon=True)
        self._thread.start()
        self.health = "ok"

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


def audio_common_available() -> bool:
    try:
        import audio_common_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


# audio_common's AudioInfo.sample_format -> numpy dtype of one sample
PCM_FORMATS = {"S16LE": "<i2", "S32LE": "<i4", "F32LE": "<f4", "U8": "u1", "S16BE": ">i2", "S32BE": ">i4",
               "F32BE": ">f4"}


def pcm_to_float(data: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 in [-1, 1]."""
    if sample_format not in PCM_FORMATS:
        raise ValueError(f"unsupported PCM sample format '{sample_format}'; supported: {sorted(PCM_FORMATS)}")
    samples = np.frombuffer(bytes(data), dtype=PCM_FORMATS[sample_format])
    if channels < 1 or samples.size % channels:
        raise ValueError(f"{samples.size} samples do not split into {channels} channels")
    scale = {"i2": 32768.0, "i4": 2147483648.0, "u1": 128.0}.get(samples.dtype.str[1:], 1.0)
    mono = samples.reshape(-1, channels).astype(np.float32).mean(axis=1)
    if samples.dtype.kind == "u":
        mono -= 128.0
    return mono / scale


# AudioInfo.coding_format values that mean interleaved PCM (audio_capture's format:=wave sends "wave")
PCM_CODINGS = ("wave", "pcm", "raw")
TOPIC_RATES_HZ = (8000, 192000)
STALE_AUDIO_S = 2.0  # a topic that delivered nothing for this long is reported, not silently held
LATCH_CHECK_S = 1.0  # how often the graph is checked for a transient-local AudioInfo publisher


def check_audio_info(info) -> str | None:
    """Why this AudioInfo cannot be decoded, or None. `bitrate` is not checked: audio_capture sends its mp3
    encoder's setting (192) with wave too."""
    if info.coding_format.lower() not in PCM_CODINGS:
        return (f"coding_format '{info.coding_format}' is not PCM; run audio_capture with format:=wave "
                f"(its default, mp3, is not decoded here)")
    if info.sample_format not in PCM_FORMATS:
        return f"sample_format '{info.sample_format}' is not one of {', '.join(sorted(PCM_FORMATS))}"
    if info.channels < 1:
        return "channels is 0"
    if not TOPIC_RATES_HZ[0] <= info.sample_rate <= TOPIC_RATES_HZ[1]:
        return f"sample_rate {info.sample_rate} Hz is outside {TOPIC_RATES_HZ[0]} to {TOPIC_RATES_HZ[1]} Hz"
    return None


class TopicSource(AudioSource):
    """PCM from audio_common's capture node (ros-drivers/audio_common, format:=wave), or anything publishing alike.

    Samples are stamped on arrival: audio_capture stamps AudioDataStamped with the GStreamer pipeline clock, which
    is not ROS time, and AudioData carries no stamp at all. The last valid AudioInfo says how to decode; a refused
    one stops decoding until a valid one comes, as the data that follows it is in the refused format.
    """

    def __init__(self, node, topic: str, info_topic: str, stamped: bool, buffer_s: float, clock: Clock) -> None:
        if not audio_common_available():
            raise ValueError("audio.source is 'topic' but audio_common_msgs cannot be imported (on a ROS install: "
                             "apt install ros-$ROS_DISTRO-audio-common-msgs; elsewhere scripts/setup.sh builds it)")
        super().__init__(16000, buffer_s, clock)
        self.node, self.stamped = node, stamped
        self.topic = topic or ("audio_stamped" if stamped else "audio")  # audio_capture's names
        self.info_topic = info_topic
        self._buffer_s = buffer_s
        self._info = None
        self._logged_refusal: str | None = None
        self._last_arrival = 0.0
        self._subscriptions = []
        self._latch_watch = None

    def _refuse(self, reason: str) -> None:
        self.health = reason
        if reason != self._logged_refusal:  # once per reason: audio arrives many times a second
            self.node.get_logger().error(f"audio topic source: {reason}")
            self._logged_refusal = reason

    def _on_info(self, info) -> None:
        reason = check_audio_info(info)
        if reason is not None:
            self._info = None
            self._refuse(f"AudioInfo on {self.info_topic} refused: {reason}")
            return
        if self._info != info:
            self.node.get_logger().info(f"audio topic source: {info.channels} channel(s) {info.sample_format} at "
                                        f"{info.sample_rate} Hz on {self.topic}")
        if info.sample_rate != self.sample_rate:
            self.buffer = RingBuffer(info.sample_rate, self._buffer_s)
        self._info = info
        self._logged_refusal = None
        if not self.health.startswith("ok"):
            self.health = f"waiting for audio on {self.topic}"

    def _on_audio(self, msg) -> None:
        self._last_arrival = time.monotonic()
        info = self._info
        if info is None:
            if self._logged_refusal is None:
                self.health = f"waiting for AudioInfo on {self.info_topic}"
            return
        try:
            mono = pcm_to_float(msg.audio.data if self.stamped else msg.data, info.sample_format, info.channels)
        except ValueError as error:
            self._refuse(f"audio on {self.topic} refused: {error}")
            return
        self.buffer.write(mono, self.clock())
        self.health = "ok"
        self._logged_refusal = None

    def healthy(self) -> bool:
        if self.health == "ok" and time.monotonic() - self._last_arrival > STALE_AUDIO_S:
            self.health = f"waiting for audio on {self.topic}: none for {STALE_AUDIO_S:g} s"
        return self.health == "ok"

    def start(self) -> None:
        """Subscribe, unless already subscribed: the node's retries must not drop the AudioInfo already held."""
        from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
        from rclpy.clock import Clock, ClockType
        from rclpy.qos import QoSProfile

        if self._subscriptions:
            return
        # audio_capture publishes with the default QoS: reliable, volatile, depth 10 (1 for the info, repeated
        # every 5 s). A volatile reader also matches a transient-local writer, but gets none of its history.
        self._subscriptions = [
            self.node.create_subscription(AudioInfo, self.info_topic, self._on_info, QoSProfile(depth=1)),
            self.node.create_subscription(AudioDataStamped if self.stamped else AudioData, self.topic,
                                          self._on_audio, QoSProfile(depth=10)),
        ]
        self.health = f"waiting for AudioInfo on {self.info_topic}"
        self._latch_watch = self.node.create_timer(LATCH_CHECK_S, self._read_latched_info,
                                                   clock=Clock(clock_type=ClockType.STEADY_TIME))  # sim time too
        self._read_latched_info()

    def _read_latched_info(self) -> None:
        """Add a transient-local info reader once a transient-local info publisher shows up, so that an info
        published once, before we came, is read too. Only then: a volatile writer, as audio_capture's, would
        warn about every transient-local reader as requesting an incompatible QoS."""
        from audio_common_msgs.msg import AudioInfo
        from rclpy.qos import DurabilityPolicy, QoSProfile

        offered = self.node.get_publishers_info_by_topic(self.info_topic)
        if any(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered):
            self._subscriptions.append(self.node.create_subscription(
                AudioInfo, self.info_topic, self._on_info,
                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)))
            self._stop_latch_watch()

    def _stop_latch_watch(self) -> None:
        if self._latch_watch is not None:
            self.node.destroy_timer(self._latch_watch)
            self._latch_watch = None

    def stop(self) -> None:
        self._stop_latch_watch()
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        self._info = None
