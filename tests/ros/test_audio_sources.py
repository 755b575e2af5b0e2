import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile

from avag_ros.audio.pcm import PCM_FORMATS, float_to_pcm, pcm_to_float
from avag_ros.audio.ring_buffer import RingBuffer
from avag_ros.audio.sound_events import loudest_level_db
from avag_ros.audio.sources import FileSource
from ros_support import ros_domain, write_tone


def test_ring_buffer_wraps_and_returns_latest():
    buffer = RingBuffer(sample_rate=10, capacity_s=1.0)  # 10 samples
    buffer.write(np.arange(7, dtype=np.float32), stamp_ns=1)
    buffer.write(np.arange(7, 13, dtype=np.float32), stamp_ns=2)
    assert buffer.latest(0.5).tolist() == [8, 9, 10, 11, 12]
    assert buffer.latest(5.0).tolist() == list(range(3, 13))  # only what fits
    assert buffer.written == 13 and buffer.last_stamp_ns == 2


def test_a_block_longer_than_the_ring_counts_every_sample_it_held():
    """Sample indices count from the stream's first sample, so an overflowing block must count whole."""
    buffer = RingBuffer(sample_rate=10, capacity_s=1.0)  # 10 samples
    buffer.write(np.arange(3, dtype=np.float32), stamp_ns=1)
    buffer.write(np.arange(3, 28, dtype=np.float32), stamp_ns=2)  # 25 samples into a ring of 10
    assert buffer.written == 28
    assert buffer.latest(1.0).tolist() == list(range(18, 28))
    assert buffer.read(20, 25).tolist() == list(range(20, 25))  # by index, as the ring still holds them
    buffer.write(np.arange(28, 31, dtype=np.float32), stamp_ns=3)
    assert buffer.latest(1.0).tolist() == list(range(21, 31))


def test_ring_buffer_reads_by_index_and_dates_each_sample():
    buffer = RingBuffer(sample_rate=1000, capacity_s=0.01)  # 10 samples
    buffer.write(np.arange(8, dtype=np.float32), stamp_ns=7_000_000)  # the 8th sample at 7 ms
    buffer.write(np.arange(8, 15, dtype=np.float32), stamp_ns=20_000_000)  # the 15th at 20 ms: a late block
    assert buffer.read(5, 15).tolist() == list(range(5, 15)) and buffer.read(9, 9).size == 0
    for start, end in ((4, 10), (10, 16)):  # overwritten, or not written yet
        with pytest.raises(ValueError, match="not in the ring, which holds 5-15"):
            buffer.read(start, end)
    # at 1 kHz a sample lasts 1 ms, dated back from the last block's stamp
    assert [buffer.stamp_of(i) for i in (14, 10, 0)] == [20_000_000, 16_000_000, 6_000_000]


def test_pcm_formats():
    stereo = np.array([[1000, 3000], [-32768, 32767]], "<i2")
    assert pcm_to_float(stereo.tobytes(), "S16LE", 2) == pytest.approx([2000 / 32768, -0.5 / 32768], abs=1e-6)
    floats = np.array([0.5, -0.25], "<f4")
    assert pcm_to_float(floats.tobytes(), "F32LE", 1).tolist() == [0.5, -0.25]
    with pytest.raises(ValueError, match="unsupported PCM sample format"):
        pcm_to_float(b"\x00\x00", "MP3", 1)
    with pytest.raises(ValueError, match="do not split"):
        pcm_to_float(b"\x00\x00" * 3, "S16LE", 2)


# Samples written out by hand, as each layout stores them: -1, -0.5, 0 and +1 (whose integer is one step short).
PCM_BYTES = {"S16LE": b"\x00\x80\x00\xc0\x00\x00\xff\x7f", "S16BE": b"\x80\x00\xc0\x00\x00\x00\x7f\xff",
             "S32LE": b"\x00\x00\x00\x80\x00\x00\x00\xc0\x00\x00\x00\x00\xff\xff\xff\x7f",
             "S32BE": b"\x80\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x00\x7f\xff\xff\xff",
             "U8": b"\x00\x40\x80\xff", "F32LE": b"\x00\x00\x80\xbf\x00\x00\x00\xbf\x00\x00\x00\x00\x00\x00\x80\x3f",
             "F32BE": b"\xbf\x80\x00\x00\xbf\x00\x00\x00\x00\x00\x00\x00\x3f\x80\x00\x00"}


@pytest.mark.parametrize("sample_format", sorted(PCM_FORMATS))
def test_pcm_both_ways_in_every_format_the_node_decodes(sample_format):
    """The sample player encodes with the rule the node decodes with: the bytes are each layout's own, and a sound
    comes back within one step of the format, in every channel."""
    assert sorted(PCM_BYTES) == sorted(PCM_FORMATS)
    values = np.array([-1.0, -0.5, 0.0, 1.0])
    assert float_to_pcm(values, sample_format, 1) == PCM_BYTES[sample_format]
    step = 1.0 / 128 if sample_format == "U8" else 1.0 / 32768 if "16" in sample_format else 1e-7
    assert pcm_to_float(PCM_BYTES[sample_format], sample_format, 1) == pytest.approx(values, abs=step)
    sound = np.sin(np.linspace(0.0, 20.0, 500)) * 0.8
    stereo = float_to_pcm(sound, sample_format, 2)
    assert len(stereo) == 2 * len(float_to_pcm(sound, sample_format, 1))
    assert pcm_to_float(stereo, sample_format, 2) == pytest.approx(sound, abs=step)


def test_file_source_plays_in_real_time_and_loops(tmp_path):
    rate = 8000
    clip = (np.arange(4000) % 100 / 100.0 - 0.5).astype(np.float32)  # 0.5 s sawtooth
    path = tmp_path / "clip (1).wav"
    soundfile.write(path, clip, rate, subtype="PCM_16")
    source = FileSource(str(path), buffer_s=3.0, clock=time.monotonic_ns)
    source.start()
    started = time.monotonic()
    time.sleep(1.2)
    source.stop()  # before reading, so that no block lands between the two reads below
    written, elapsed = source.buffer.written, time.monotonic() - started
    assert source.healthy()
    assert abs(written / rate - elapsed) < 0.3  # paced like a microphone, not dumped at once
    played = source.buffer.latest(1.0)
    start = (written - played.size) % clip.size
    np.testing.assert_allclose(played, np.take(clip, np.arange(start, start + played.size), mode="wrap"), atol=1e-4)


def test_file_source_errors():
    with pytest.raises(ValueError, match="audio.file is empty"):
        FileSource("", 2.0, time.monotonic_ns)
    with pytest.raises(ValueError, match="not found"):
        FileSource("/nonexistent/clip.wav", 2.0, time.monotonic_ns)


ALSA_CONF = """
pcm.!default {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{infile}"
            format "raw"
        }}
        format S16_LE
        rate 16000
        channels 1
    }}
}}
"""

CAPTURE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from avag_ros.audio.sources import MicrophoneSource
    from avag_ros.audio.sound_events import loudest_level_db
    rate, channels, device = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    source = MicrophoneSource(device, rate, channels, buffer_s=2.0, clock=time.monotonic_ns)
    try:
        source.start()
    except ValueError as error:
        print(json.dumps({"error": str(error), "health": source.health}))
        sys.exit(0)
    time.sleep(1.0)
    source.stop()
    audio = source.buffer.latest(0.5)
    spectrum = np.abs(np.fft.rfft(audio))
    print(json.dumps({"written": source.buffer.written, "peak_hz": float(np.argmax(spectrum) * rate / audio.size),
                      "level_db": loudest_level_db(audio, rate)}))
""")


def capture(tmp_path, rate, channels, device=""):
    t = np.arange(16000 * 4) / 16000
    (tmp_path / "input.raw").write_bytes((0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype("<i2").tobytes())
    conf = tmp_path / "asound.conf"
    conf.write_text(ALSA_CONF.format(infile=tmp_path / "input.raw"))
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    result = subprocess.run([sys.executable, "-c", CAPTURE, str(rate), str(channels), device], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import json
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def portaudio():
    try:
        import sounddevice  # noqa: F401
    except OSError as error:
        pytest.skip(f"PortAudio library missing: {error}")


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_microphone_capture_through_real_portaudio(tmp_path, portaudio, rate, channels):
    stats = capture(tmp_path, rate, channels)
    assert "error" not in stats, stats
    assert stats["written"] > rate * 0.5
    assert abs(stats["peak_hz"] - 1000) < 20  # the 1 kHz tone in the file came through, resampled if needed
    assert stats["level_db"] == pytest.approx(-9.0, abs=1.5)  # 0.5 amplitude sine: -9 dBFS RMS


def test_missing_microphone_is_reported_not_raised_elsewhere(tmp_path, portaudio):
    stats = capture(tmp_path, 16000, 1, device="no such microphone")
    assert "failed to open" in stats["error"] and stats["health"] == stats["error"]



# The `topic` source next to audio_common's audio_capture (format:=wave) -------------------------------------------

def audio_common():
    """audio_common_msgs.msg, or a skip: the tests above need no interface package."""
    return pytest.importorskip("audio_common_msgs.msg", reason="scripts/build_interfaces.sh builds it")


def clip_level_db(path) -> float:
    """The clip's RMS in dBFS, computed from the file alone: the node's level must match it."""
    samples, _ = soundfile.read(path, dtype="float64", always_2d=True)
    return 20 * math.log10(math.sqrt(np.mean(samples.mean(axis=1) ** 2)))


@pytest.fixture(scope="module")
def checkpoint(module_folder):
    from ros_support import small_checkpoint

    return small_checkpoint(module_folder / "b0_64px.pt")


def topic_node(context, checkpoint, cli_args=()):
    """The node with `-p audio.source:=topic` and nothing else about audio."""
    from rclpy.parameter import Parameter

    from avag_ros.grounding_node import GroundingNode

    values = {"checkpoint": str(checkpoint), "audio.source": "topic", "max_rate_hz": 0.0}
    return GroundingNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
                         cli_args=list(cli_args))


def wait_until(condition, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def wait_for_level(source, expected_db, timeout=30.0) -> float:
    """The source's level once it has a second of audio at `expected_db` or the timeout passed."""
    def level() -> float:
        return loudest_level_db(source.buffer.latest(1.0), source.sample_rate)

    wait_until(lambda: source.healthy() and abs(level() - expected_db) < 0.2, timeout)
    return level()


# Each run starts a node and a sample_player process (20-30 s): audio_capture's default format runs in the default
# tier, the other formats in the slow one.
@pytest.mark.parametrize("sample_format, channels, rate", [
    ("S16LE", 1, 16000), pytest.param("S32LE", 2, 44100, marks=pytest.mark.slow),
    pytest.param("F32LE", 2, 16000, marks=pytest.mark.slow), pytest.param("U8", 1, 44100, marks=pytest.mark.slow)])
def test_topic_source_takes_what_audio_capture_publishes(checkpoint, tmp_path, sample_format, channels, rate):
    """sample_player --audio, in its own process, publishes as audio_capture does: the node needs no more than
    audio.source topic to decode it, at the clip's level, and to publish masks."""
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from ros_support import Probe

    audio_common()
    clip = write_tone(tmp_path / "tone (1).wav", seconds=2.0, rate=rate, amplitude=0.3)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    with ros_domain() as (context, add):
        probe = add(Probe(context, {"affordance/function_mask": Image, "/diagnostics": DiagnosticArray}))
        node = add(topic_node(context, checkpoint))
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
        player = subprocess.Popen([sys.executable, "-m", "avag_ros.sample_player", "--image", str(image), "--rate",
                                   "5", "--audio", str(clip), "--audio-format", sample_format, "--audio-channels",
                                   str(channels)], env=env, stderr=subprocess.PIPE, text=True)
        try:
            def alive():
                if player.poll() is not None:
                    pytest.fail(f"sample_player ended: {player.stderr.read()}")

            assert probe.wait_for("affordance/function_mask", timeout=90, publish=alive), node.audio_source.health
            level = wait_for_level(node.audio_source, clip_level_db(clip))
            assert node.audio_source.sample_rate == rate
        finally:
            player.terminate()
            player.wait(timeout=20)
    assert level == pytest.approx(clip_level_db(clip), abs=0.2)


class AudioPublisher:
    """In-process stand-in for audio_capture whose AudioInfo and info QoS a test chooses: a 0.3 sine, S16LE mono
    16 kHz, on audio_stamped in 50 ms messages."""

    RATE = 16000

    def __init__(self, node, durability, info=None, repeat_info_s=0.5, info_topic="audio_info"):
        from rclpy.qos import QoSProfile

        msgs = audio_common()
        self.info = info or msgs.AudioInfo(channels=1, sample_rate=self.RATE, sample_format="S16LE", bitrate=192,
                                           coding_format="wave")
        self.info_publisher = node.create_publisher(msgs.AudioInfo, info_topic,
                                                    QoSProfile(depth=1, durability=durability))
        self.info_publisher.publish(self.info)
        if repeat_info_s:
            node.create_timer(repeat_info_s, lambda: self.info_publisher.publish(self.info))
        audio = node.create_publisher(msgs.AudioDataStamped, "audio_stamped", QoSProfile(depth=10))
        t = np.arange(self.RATE // 20) / self.RATE
        chunk = (0.3 * np.sin(2 * np.pi * 400 * t) * 32767).astype("<i2").tobytes()  # 20 whole periods
        node.create_timer(0.05, lambda: audio.publish(msgs.AudioDataStamped(audio=msgs.AudioData(data=chunk))))

    LEVEL_DB = 20 * math.log10(0.3 * 32767 / 32768 / math.sqrt(2))


@pytest.mark.parametrize("durability, remapped", [("volatile", False), ("transient_local", False),
                                                  ("transient_local", True)])
def test_topic_source_matches_volatile_and_transient_local_info(checkpoint, durability, remapped, capfd):
    """audio_capture's info is volatile and repeated; a latched one published once before the node starts must be
    picked up too, also under a remapped name. Neither side may warn of an incompatible QoS, as the old
    transient-local-only reader did."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy

    policy = DurabilityPolicy.VOLATILE if durability == "volatile" else DurabilityPolicy.TRANSIENT_LOCAL
    info_topic = "mic/info" if remapped else "audio_info"
    with ros_domain() as (context, add):
        publisher = AudioPublisher(add(Node("audio_capture", context=context)), policy,
                                   repeat_info_s=0.5 if durability == "volatile" else 0.0, info_topic=info_topic)
        node = add(topic_node(context, checkpoint, cli_args=["--ros-args", "-r", f"audio_info:={info_topic}"]))
        level = wait_for_level(node.audio_source, AudioPublisher.LEVEL_DB)
        assert publisher.info_publisher.get_subscription_count() >= 1
    assert level == pytest.approx(AudioPublisher.LEVEL_DB, abs=0.2), node.audio_source.health
    assert "incompatible QoS" not in capfd.readouterr().err


def test_mp3_and_bad_audio_info_are_refused_and_the_node_keeps_running(checkpoint, capfd):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy

    from ros_support import Probe

    msgs = audio_common()
    mp3 = msgs.AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE", bitrate=192, coding_format="mp3")
    with ros_domain() as (context, add):
        probe = add(Probe(context, {"/diagnostics": DiagnosticArray}))
        publisher = AudioPublisher(add(Node("audio_capture", context=context)), DurabilityPolicy.VOLATILE, mp3)
        node = add(topic_node(context, checkpoint))

        def diagnosed(text):
            statuses = [msg.status[0] for msg in list(probe.received["/diagnostics"])[-2:]]
            return any(text in kv.value for status in statuses for kv in status.values if kv.key == "audio_health")

        assert wait_until(lambda: diagnosed("coding_format 'mp3' is not PCM")), node.audio_source.health
        assert node.audio_source.buffer.written == 0  # nothing decoded from a stream said to be mp3
        publisher.info = msgs.AudioInfo(channels=1, sample_rate=16000, sample_format="S24LE", coding_format="wave")
        assert wait_until(lambda: diagnosed("sample_format 'S24LE' is not one of")), node.audio_source.health
        publisher.info = msgs.AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE", coding_format="wave")
        level = wait_for_level(node.audio_source, AudioPublisher.LEVEL_DB)
        assert node._worker is not None  # still active
    assert level == pytest.approx(AudioPublisher.LEVEL_DB, abs=0.2)
    errors = [line for line in capfd.readouterr().err.splitlines() if "AudioInfo on audio_info refused" in line]
    assert len(errors) == 2 and "mp3" in errors[0] and "S24LE" in errors[1], errors  # once per reason, not per message
