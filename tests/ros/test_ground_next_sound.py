"""~/ground_next_sound (avag_interfaces/GroundNextSound) over real DDS, with a real rclpy.action.ActionClient in a
planner's node: the demo's weights and scene, a 10 Hz camera, and the node's file source playing a sound between
quiets at known places of its clip.

The truths: which object the sound is (the scene's ground truths, IoU 0.5), when each goal was sent (the client's
clock, the node's too: one machine), and the clip rule (audio.window_s, the 50 ms pre-roll).
"""
import threading
import time

import numpy as np
import pytest
import soundfile
import torch
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, synthesize_sound
from avag_core.training.metrics import sample_iou
from avag_ros.messages.images import image_to_rgb
from avag_ros.tools.demo import QUIET_RMS, demo_scene
from conftest import DEMO_CHECKPOINT
from ros_support import Probe, grounding_node, ros_domain

action = pytest.importorskip("avag_interfaces.action", reason="interfaces not built (scripts/build_interfaces.sh)")
GroundNextSound = action.GroundNextSound

SOUND_S, QUIET_S = 3.0, 3.5  # the clip loops: the mug, then quiet


def ns(time_msg) -> int:
    return time_msg.sec * 1_000_000_000 + time_msg.nanosec


class Planner:
    """A planner's node with an ActionClient, spun by its own executor thread."""

    def __init__(self, context, name="/affordance_grounding/ground_next_sound"):
        self.node = Node("planner", context=context)
        self.client = ActionClient(self.node, GroundNextSound, name)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        assert self.client.wait_for_server(timeout_sec=30)

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def send(self, timeout_s=0.0, min_heard_s=0.0, wait_for_end=False):
        """-> (goal handle, the feedback list, the node-clock time it was sent)"""
        feedback = []
        sent_ns = self.node.get_clock().now().nanoseconds
        future = self.client.send_goal_async(GroundNextSound.Goal(timeout_s=timeout_s, min_heard_s=min_heard_s,
                                                                  wait_for_end=wait_for_end),
                                             feedback_callback=lambda message: feedback.append(message.feedback))
        handle = wait(future, 10)
        return handle, feedback, sent_ns

    def close(self):
        self._stop.set()
        self._thread.join()
        self.client.destroy()
        self.executor.shutdown()
        self.node.destroy_node()


def wait(future, timeout):
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done(), "no answer"
    return future.result()


@pytest.fixture(scope="module")
def scene_and_clips(module_folder):
    rng = np.random.default_rng(3)
    scene, _ = demo_scene(rng)
    mug = next(c for c in CATEGORIES if c.object == "mug")
    clip = np.concatenate([synthesize_sound(rng, mug.sound, SOUND_S),
                           rng.normal(0.0, QUIET_RMS, int(QUIET_S * SAMPLE_RATE)).astype(np.float32)])
    soundfile.write(module_folder / "mug.wav", clip, SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(module_folder / "quiet.wav", clip[-SAMPLE_RATE:] * 0, SAMPLE_RATE, subtype="PCM_16")
    truths = {c.object: mask for c, mask in zip(scene.categories, scene.function_masks)}
    return scene, module_folder / "mug.wav", module_folder / "quiet.wav", truths


def camera(probe, image, stop):
    def run():
        while not stop.wait(0.1):
            probe.publish_rgb(image)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def played_s(node) -> float:
    """Where the node's file source is in its looped clip."""
    return node.audio_source.buffer.written / node.audio_source.sample_rate % (SOUND_S + QUIET_S)


def test_goals_wait_for_the_next_sound_and_get_its_grounding_while_the_stream_goes_on(scene_and_clips):
    """Goal 1 is sent while the mug sounds: its event began before the goal, so it waits for the next one, and the
    stream's masks keep coming meanwhile. Goals 2-4 are sent in the quiet after it, two alike and one with
    wait_for_end. All four get the next mug's event, with the mug's masks; the two alike get one grounding; the
    one that waited for the end got two whole windows of it (audio.window_s 2.0); feedback came meanwhile."""
    scene, clip, _, truths = scene_and_clips
    with ros_domain() as (context, add):
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        node = add(grounding_node(context, DEMO_CHECKPOINT, clip, **{"audio.window_s": 2.0}))
        stop = threading.Event()
        streaming = camera(probe, scene.image, stop)
        planner = Planner(context)
        try:
            assert probe.wait_until(lambda: 1.0 <= played_s(node) < 2.0, timeout=60)  # the mug sounds
            first, first_feedback, first_sent = planner.send()
            masks_then = probe.count("affordance/function_mask")
            assert probe.wait_until(lambda: SOUND_S + 0.2 <= played_s(node) < SOUND_S + 1.0, timeout=30)
            masks_while_waiting = probe.count("affordance/function_mask") - masks_then
            others = [planner.send() for _ in range(2)] + [planner.send(wait_for_end=True)]
            results = [wait(handle.get_result_async(), 30) for handle, _, _ in [(first, None, None), *others]]
        finally:
            stop.set()
            streaming.join()
            planner.close()
    assert masks_while_waiting >= 5, "the stream stopped while a goal waited"
    assert len(first_feedback) >= 4 and first_feedback[-1].waited_s > first_feedback[0].waited_s
    assert any(f.sound_event_active for f in first_feedback)  # the mug it heard, but did not answer
    groundings = []
    for result in results:
        assert result.status == 4, result.result.message  # SUCCEEDED
        assert result.result.success, result.result.message
        groundings.append(result.result.grounding)
    sent_quiet = max(sent for _, _, sent in others)
    assert len({g.event_id for g in groundings}) == 1
    for grounding in groundings:
        assert ns(grounding.event_onset) > sent_quiet  # the first event that began after the goals
        mask = torch.from_numpy(image_to_rgb(grounding.function_mask)[..., 0] > 127).float()
        assert sample_iou(mask, torch.from_numpy(truths["mug"]).float()) >= 0.5
        assert ns(grounding.event_onset) - 51e6 <= ns(grounding.audio_start) < ns(grounding.audio_end)
    assert groundings[1] == groundings[2]  # alike goals on one event share one grounding
    whole = groundings[3]
    assert (ns(whole.audio_end) - ns(whole.audio_start)) / 1e9 == pytest.approx(2 * 0.96 + 0.015, abs=0.002)
    assert ns(groundings[0].audio_end) - ns(groundings[0].audio_start) < 1.5e9  # the shortest that answers


def test_timeout_cancel_and_deactivation_end_a_waiting_goal_and_say_why(scene_and_clips):
    scene, _, quiet, _ = scene_and_clips
    with ros_domain() as (context, add):
        probe = add(Probe(context, {}))
        node = add(grounding_node(context, DEMO_CHECKPOINT, quiet))
        stop = threading.Event()
        streaming = camera(probe, scene.image, stop)
        planner = Planner(context)
        try:
            timed, _, _ = planner.send(timeout_s=1.0)
            timed_out = wait(timed.get_result_async(), 20)
            canceled, _, _ = planner.send()
            time.sleep(0.5)
            cancel = wait(canceled.cancel_goal_async(), 10)
            canceled_result = wait(canceled.get_result_async(), 10)
            waiting, _, _ = planner.send()
            time.sleep(0.5)
            node.trigger_deactivate()
            deactivated = wait(waiting.get_result_async(), 10)
            refused, _, _ = planner.send()
            node.trigger_activate()
            bad, _, _ = planner.send(timeout_s=-1.0)
            bad_result = wait(bad.get_result_async(), 10)
        finally:
            stop.set()
            streaming.join()
            planner.close()
    assert timed_out.status == 6 and not timed_out.result.success  # ABORTED
    assert timed_out.result.message == "timed out after 1 s: no sound event began"
    assert len(cancel.goals_canceling) == 1
    assert canceled_result.status == 5 and canceled_result.result.message == "canceled"  # CANCELED
    assert deactivated.status == 6 and deactivated.result.message == "the node was deactivated"
    assert not refused.accepted  # only while active
    assert bad_result.status == 6 and "timeout_s must be a number of seconds, 0 or more" in bad_result.result.message
