"""Stopping a node process: always within a bound, cleanly when it can, and forced (saying so) when it cannot."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from ros_support import Probe, grounding_node_command, ros_domain, small_checkpoint, write_tone

REPEATS = 20  # enough runs to expose a race between the signal, the stream and the teardown
EXIT_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def files(module_folder):
    return {"checkpoint": small_checkpoint(module_folder / "b0_64px.pt"),
            "tone": write_tone(module_folder / "tone.wav")}


def malformed(rng, jpeg: bytes) -> bytes:
    kind = rng.integers(4)
    if kind == 0:
        return rng.integers(0, 256, 2000, np.uint8).tobytes()  # no image at all
    if kind == 1:
        return jpeg[:int(rng.integers(10, len(jpeg) - 10))]  # truncated
    if kind == 2:
        return b"\xff\xd8\xff" + bytes(500) + b"\xff\xd9"  # markers right, content not
    return b""


@pytest.mark.slow  # 20 node starts and stops
def test_compressed_node_stops_cleanly_under_a_stream_every_time(files, tmp_path):
    """SIGINT and SIGTERM in turn, each at a random moment of a 15 Hz stream of JPEG frames and malformed ones:
    every exit within 5 s, code 0, no ERROR line and no traceback. Each node has its own namespace, so that the
    next one can start up while this one is being stopped (a busier machine, and half the test's time)."""
    rng = np.random.default_rng(0)
    jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (120, 160, 3), np.uint8))[1].tobytes()
    masks = {run: f"/stop{run}/affordance/function_mask" for run in range(REPEATS)}
    with ros_domain() as (context, add):
        probe = add(Probe(context, {topic: Image for topic in masks.values()}, image_topic="/image/compressed",
                          image_type=CompressedImage))
        stop = threading.Event()

        def stream():
            while not stop.wait(1 / 15):
                probe.publisher.publish(CompressedImage(header=probe.header(), format="jpeg", data=jpeg))
                probe.publisher.publish(CompressedImage(header=probe.header(), format="jpeg",
                                                        data=malformed(rng, jpeg)))

        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id()), "PYTHONUNBUFFERED": "1"}

        def start(run: int) -> subprocess.Popen:
            with open(tmp_path / f"node{run}.log", "w") as out:
                return subprocess.Popen(
                    grounding_node_command(files["checkpoint"], files["tone"], "-r", f"__ns:=/stop{run}",
                                           "-r", "image/compressed:=/image/compressed", "-p", "use_compressed:=true",
                                           "-p", "max_rate_hz:=0.0"), env=env, stdout=out, stderr=subprocess.STDOUT)

        camera = threading.Thread(target=stream, daemon=True)
        camera.start()
        nodes = {0: start(0)}
        try:
            for run in range(REPEATS):
                how = (signal.SIGINT, signal.SIGTERM)[run % 2]
                log = tmp_path / f"node{run}.log"
                node = nodes[run]
                assert probe.wait_for(masks[run], timeout=60), log.read_text()
                if run + 1 < REPEATS:
                    nodes[run + 1] = start(run + 1)
                time.sleep(rng.uniform(0.0, 0.5))
                node.send_signal(how)
                sent = time.monotonic()
                code = node.wait(timeout=EXIT_WITHIN_S + 5)
                took = time.monotonic() - sent
                output = log.read_text()
                assert code == 0 and took < EXIT_WITHIN_S, \
                    f"run {run} ({how.name}): code {code} after {took:.1f} s\n{output}"
                assert "[ERROR]" not in output and "Traceback" not in output, f"run {run} ({how.name}):\n{output}"
        finally:
            for node in nodes.values():
                if node.poll() is None:
                    node.kill()
            stop.set()
            camera.join()


STUCK = """
import re, sys, time
from avag_ros.shutdown import BoundedShutdown
shutdown = BoundedShutdown("stuck_node", {timeout})
print("ready", flush=True)
while not shutdown.requested.is_set():
    time.sleep(0.01)
{teardown}
"""


def run_stuck(teardown: str, signals: int, timeout: float = 1.0) -> tuple[int, str, float]:
    script = STUCK.format(timeout=timeout, teardown=textwrap.dedent(teardown))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, process.stdout.read(), time.monotonic() - started


def test_a_teardown_that_hangs_is_forced_after_the_bound_and_says_where():
    code, output, took = run_stuck("""
        shutdown.begin()
        shutdown.set_step("waiting for a thread that never ends")
        time.sleep(60)
    """, signals=1)
    assert code == 1 and took < 3, (code, took, output)
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "did not stop within 1 s (step: waiting for a thread that never ends)" in errors[0]
    assert "Thread 0x" in output or "Current thread" in output  # the stacks, for the bug report


def test_a_teardown_that_holds_the_gil_is_still_forced():
    code, output, took = run_stuck("""
        shutdown.begin()
        re.match(r"(a+)+$", "a" * 40 + "b")  # catastrophic backtracking inside C, holding the GIL
    """, signals=1)
    assert code == 1 and took < 4, (code, took, output)
    assert "Timeout" in output  # faulthandler's watchdog, which needs no GIL


def test_a_second_signal_forces_the_exit_at_once():
    code, output, took = run_stuck("""
        shutdown.begin(extra_s=60)
        time.sleep(60)
    """, signals=2, timeout=30)
    assert code == 1 and took < 3, (code, took, output)
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "received a second SIGINT" in errors[0]
