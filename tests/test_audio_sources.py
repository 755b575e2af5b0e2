import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile

from avag_ros.audio_sources import FileSource, RingBuffer, pcm_to_float


def test_ring_buffer_wraps_and_returns_latest():
    buffer = RingBuffer(sample_rate=10, capacity_s=1.0)  # 10 samples
    buffer.write(np.arange(7, dtype=np.float32), stamp_ns=1)
    buffer.write(np.arange(7, 13, dtype=np.float32), stamp_ns=2)
    assert buffer.latest(0.5).tolist() == [8, 9, 10, 11, 12]
    assert buffer.latest(5.0).tolist() == list(range(3, 13))  # only what fits
    assert buffer.written == 13 and buffer.last_stamp_ns == 2


def test_ring_buffer_aligned_windows_start_on_the_grid():
    buffer = RingBuffer(sample_rate=10, capacity_s=5.0)
    buffer.write(np.arange(23, dtype=np.float32), 0)
    assert buffer.latest(1.5, align_s=0.5).tolist() == list(range(10, 23))  # starts at sample 10, not 8


def test_level_db_and_non_finite_audio():
    buffer = RingBuffer(sample_rate=1000, capacity_s=2.0)
    assert buffer.level_db(1.0) == -120.0
    buffer.write(np.full(1000, 0.1, np.float32), 0)
    assert buffer.level_db(1.0) == pytest.approx(-20.0, abs=0.01)
    buffer.write(np.array([np.nan] * 50, np.float32), 1)
    assert math.isnan(buffer.level_db(1.0))


def test_pcm_formats():
    stereo = np.array([[1000, 3000], [-32768, 32767]], "<i2")
    assert pcm_to_float(stereo.tobytes(), "S16LE", 2) == pytest.approx([2000 / 32768, -0.5 / 32768], abs=1e-6)
    floats = np.array([0.5, -0.25], "<f4")
    assert pcm_to_float(floats.tobytes(), "F32LE", 1).tolist() == [0.5, -0.25]
    with pytest.raises(ValueError, match="unsupported PCM sample format"):
        pcm_to_float(b"\x00\x00", "MP3", 1)
    with pytest.raises(ValueError, match="do not split"):
        pcm_to_float(b"\x00\x00" * 3, "S16LE", 2)


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
    from avag_ros.audio_sources import MicrophoneSource
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
                      "level_db": source.buffer.level_db(0.5)}))
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
