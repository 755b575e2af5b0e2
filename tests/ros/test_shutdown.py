"""Stopping a node process: always within a bound, cleanly when it can, and forced (saying so) when it cannot."""
import json
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

from avag_core.inference.manifest import MANIFEST_NAME
from ros_support import Probe, fresh_domain_id, grounding_node_command, ros_domain, small_checkpoint, write_tone

REPEATS = 20  # enough runs to expose a race between the signal, the stream and the teardown
DOUBLE_SIGNAL_REPEATS = 8
SIGNAL_GAP_S = 0.05  # between the terminal's SIGINT and the one `ros2 launch` sends on
# `ros2 launch` escalates to SIGTERM 5 s after its SIGINT: a node still running then is no clean stop to the user
# (launch no longer reports "finished cleanly"), so every exit must come before it.
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


def stop_nodes_under_a_stream(files, tmp_path, stops: list[tuple[signal.Signals, ...]]) -> None:
    """One compressed node per entry of `stops`, each sent that entry's signals (50 ms apart) at a random moment
    of a 15 Hz stream of JPEG frames and malformed ones: every exit code 0, before launch would kill it, no
    ERROR line, no traceback and no thread stacks. Each node has its own namespace, so that the next one can start
    up while this one is being stopped (a busier machine, and half the test's time)."""
    rng = np.random.default_rng(0)
    jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (120, 160, 3), np.uint8))[1].tobytes()
    masks = {run: f"/stop{run}/affordance/function_mask" for run in range(len(stops))}
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
            for run, signals in enumerate(stops):
                how = "+".join(s.name for s in signals)
                log = tmp_path / f"node{run}.log"
                node = nodes[run]
                assert probe.wait_for(masks[run], timeout=60), log.read_text()
                if run + 1 < len(stops):
                    nodes[run + 1] = start(run + 1)
                time.sleep(rng.uniform(0.0, 0.5))
                sent = time.monotonic()
                send_signals(node, signals)
                code = node.wait(timeout=EXIT_WITHIN_S + 10)
                took = time.monotonic() - sent
                output = log.read_text()
                assert code == 0 and took < EXIT_WITHIN_S, \
                    f"run {run} ({how}): code {code} after {took:.1f} s\n{output}"
                assert not unclean(output), f"run {run} ({how}):\n{output}"
        finally:
            for node in nodes.values():
                if node.poll() is None:
                    node.kill()
            stop.set()
            camera.join()


def send_signals(process: subprocess.Popen, signals: tuple[signal.Signals, ...]) -> None:
    """As a terminal's Ctrl-C and then `ros2 launch` send them: the same signal again, a moment later."""
    for index, signum in enumerate(signals):
        if index:
            time.sleep(SIGNAL_GAP_S)
        process.send_signal(signum)


def unclean(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if "[ERROR]" in line or "Traceback" in line or line.startswith(("Thread 0x", "Current thread"))]


@pytest.mark.slow  # 20 node starts and stops
def test_compressed_node_stops_cleanly_under_a_stream_every_time(files, tmp_path):
    """SIGINT and SIGTERM in turn."""
    stop_nodes_under_a_stream(files, tmp_path, [(signal.SIGINT,), (signal.SIGTERM,)] * (REPEATS // 2))


# Two stops show the behaviour; eight (slow tier) show it holds at any moment of the stream.
@pytest.mark.parametrize("repeats", [2, pytest.param(DOUBLE_SIGNAL_REPEATS, marks=pytest.mark.slow)])
def test_a_repeated_signal_is_the_same_stop(files, tmp_path, repeats):
    """Ctrl-C on `ros2 launch`: the terminal's SIGINT reaches the node, then launch's own 50 ms later. One stop,
    not a forced one."""
    stop_nodes_under_a_stream(files, tmp_path, [(signal.SIGINT, signal.SIGINT)] * repeats)


def export_folders(cache) -> dict[str, set[str]]:
    """Every folder the export cache holds (hidden staging folders included), with the files in each."""
    root = cache / "onnx"
    if not root.exists():
        return {}
    return {folder.name: {path.name for path in folder.rglob("*")} for folder in root.iterdir()}


def export_begun(log, cache) -> bool:
    return "exporting" in log.read_text()


def export_writing(log, cache) -> bool:
    """A folder in the cache: the checkpoint is loaded and the graphs are being written."""
    return (cache / "onnx").is_dir() and any((cache / "onnx").iterdir())


@pytest.mark.parametrize("moment", [export_begun, export_writing], ids=["loading", "writing"])
def test_a_signal_during_the_first_export_ends_the_process_cleanly(files, tmp_path, moment):
    """Ctrl-C while the node exports its checkpoint for onnxruntime, as it loads the checkpoint or as it writes the
    graphs: exit 0, no error and no stacks, and the cache holds either a complete export or nothing, never a partial
    folder."""
    cache = tmp_path / "cache"
    log = tmp_path / "node.log"
    env = {**os.environ, "AVAG_ROS_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1",
           "ROS_DOMAIN_ID": str(fresh_domain_id())}
    with open(log, "w") as out:
        command = grounding_node_command(files["checkpoint"], files["tone"], "-p", "backend:=onnxruntime")
        node = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not moment(log, cache):
            assert node.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        sent = time.monotonic()
        send_signals(node, (signal.SIGINT, signal.SIGINT))
        code = node.wait(timeout=EXIT_WITHIN_S + 10)
        took = time.monotonic() - sent
    finally:
        if node.poll() is None:
            node.kill()
    output = log.read_text()
    assert code == 0 and took < EXIT_WITHIN_S, f"code {code} after {took:.1f} s\n{output}"
    assert not unclean(output), output
    for name, contents in export_folders(cache).items():
        assert MANIFEST_NAME in contents, f"partial export folder {name} left in the cache: {sorted(contents)}"
        manifest = json.loads((cache / "onnx" / name / MANIFEST_NAME).read_text())
        named = {graph["file"] for graph in manifest["graphs"].values()}
        assert named | {f"{file}.data" for file in named} <= contents, (name, sorted(contents))


STUCK = """
import re, sys, time
from avag_ros.runtime.shutdown import BoundedShutdown
shutdown = BoundedShutdown("stuck_node", {timeout})
shutdown.running()
print("ready", flush=True)
while not shutdown.requested.is_set():
    time.sleep(0.01)
{teardown}
"""


def run_stuck(teardown: str, signals: int, timeout: float = 1.0, gap_s: float = 0.3) -> tuple[int, str, float]:
    script = STUCK.format(timeout=timeout, teardown=textwrap.dedent(teardown))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(gap_s)
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


def test_a_second_signal_during_the_stop_does_not_force_it():
    code, output, took = run_stuck("""
        shutdown.begin()
        shutdown.set_step("a teardown that takes a while")
        time.sleep(1.5)
        print("stopped", flush=True)
        shutdown.exit(0)
    """, signals=3, timeout=4.0, gap_s=SIGNAL_GAP_S)
    assert code == 0 and "stopped" in output and not unclean(output), (code, took, output)
    assert took > 1.4, (took, output)  # the teardown ran to its end
