"""Image-feature reuse (avag_core.inference.view_reuse): which frames reuse the keyframe's image side, and that reusing
changes the cost only. The truth is full inference by a predictor without reuse on the same backend. The node's
reuse diagnostics are in tests/ros/test_grounding_node.py."""
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from avag_core import AffordancePredictor
from avag_core.config import REUSE_MAX_AGE_S, REUSE_MAX_CHANGE
from avag_core.data.synthetic import render_scene
from avag_core.inference.view_reuse import ViewReuse, view_change, view_fingerprint
from conftest import LIGHT_AUDIO, small_model

SAMPLE_RATE = 16000
NOISE_SIGMA = 3.0  # grey levels per pixel and channel: a still camera's sensor noise, on the high side
CAMERA_SIZE = (640, 480)  # width, height
MOVE_PX = 16  # an object pushed by 2.5 % of the frame's width


class SteppedClock:
    """The time the reuse decision reads, moved on by the test, so that a slow machine cannot age a keyframe."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def camera_frame(view: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """One noisy exposure of `view`, which is the noise-free scene."""
    return np.clip(view + rng.normal(0.0, sigma, view.shape), 0, 255).astype(np.uint8)


def moved_object(view: np.ndarray, object_mask: np.ndarray, dx: int) -> np.ndarray:
    """`view` with the object under `object_mask` pushed `dx` pixels to the right (the part it uncovers keeps the
    object's old pixels, which makes the change smaller than a real move's)."""
    moved = view.copy()
    ys, xs = np.nonzero(object_mask)
    inside = xs + dx < view.shape[1]
    moved[ys[inside], xs[inside] + dx] = view[ys[inside], xs[inside]]
    return moved


def sounds(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.1, SAMPLE_RATE).astype(np.float32) for _ in range(count)]


def with_reuse(predictor: AffordancePredictor, clock: SteppedClock, max_change: float = REUSE_MAX_CHANGE,
               max_age_s: float = REUSE_MAX_AGE_S) -> AffordancePredictor:
    reusing = AffordancePredictor(predictor.backend)
    reusing.view_reuse = ViewReuse(max_change, max_age_s, clock=clock)
    return reusing


def assert_same_prediction(prediction, truth) -> None:
    for field in ("function_prob", "dependency_prob", "function_mask", "dependency_mask"):
        assert np.array_equal(getattr(prediction, field), getattr(truth, field)), field


@dataclass
class View:
    image: np.ndarray  # noise-free, at CAMERA_SIZE
    object_masks: list[np.ndarray]


@pytest.fixture(scope="module")
def scenes() -> list[View]:
    rng = np.random.default_rng(5)
    views = []
    for scene in (render_scene(rng, size=320), render_scene(rng, size=320)):
        masks = [cv2.resize(m.astype(np.uint8), CAMERA_SIZE, interpolation=cv2.INTER_NEAREST).astype(bool)
                 for m in scene.object_masks]
        views.append(View(cv2.resize(scene.image, CAMERA_SIZE, interpolation=cv2.INTER_AREA), masks))
    return views


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def full_inference(request, small_export):
    """A predictor without reuse; its backend is shared with the reusing predictor under test. Reuse is about the
    image side, so the light audio encoder spares exporting VGGish's 288 MB (onnxruntime: the session's export)."""
    if request.param == "torch":
        return AffordancePredictor.from_model(small_model(**LIGHT_AUDIO).eval(), "cpu")
    return AffordancePredictor.from_checkpoint(small_export, "cpu", backend="onnxruntime")


def test_a_still_stream_reuses_and_its_masks_equal_full_inference_on_the_keyframe(scenes, full_inference):
    rng, clock = np.random.default_rng(1), SteppedClock()
    predictor = with_reuse(full_inference, clock)
    view = scenes[0].image
    # the node's clip stays the same for a log-mel window (0.96 s), then moves on: the head reruns only then
    first, second = sounds(2)
    clips = [first, first, second, second, first]
    frames = [camera_frame(view, rng) for _ in clips]
    reused, head_reused, noise_shows = [], [], False
    for frame, clip in zip(frames, clips):
        prediction = predictor.predict(frame, clip, SAMPLE_RATE)
        reused.append(predictor.view_reuse.last_reused)
        head_reused.append(predictor.last_head_reused)
        assert_same_prediction(prediction, full_inference.predict(frames[0], clip, SAMPLE_RATE))
        own = full_inference.predict(frame, clip, SAMPLE_RATE)
        noise_shows |= not np.array_equal(own.function_prob, prediction.function_prob)
        clock.now += 0.2
    assert reused == [False, True, True, True, True]
    assert head_reused == [False, True, False, True, False]
    assert noise_shows, "the noise never changed full inference, so equality above would not show reuse"


def test_several_sounds_reuse_the_head_output_only_in_the_same_order(scenes, tiny_model):
    rng, clock = np.random.default_rng(7), SteppedClock()
    full_inference = AffordancePredictor(tiny_model)
    predictor = with_reuse(full_inference, clock)
    first, second = sounds(2, seed=3)
    frames = [camera_frame(scenes[0].image, rng) for _ in range(3)]
    head_reused = []
    for frame, clips in zip(frames, ([first, second], [first, second], [second, first])):
        predictions = predictor.predict_many(frame, clips, SAMPLE_RATE)
        head_reused.append(predictor.last_head_reused)
        for prediction, truth in zip(predictions, full_inference.predict_many(frames[0], clips, SAMPLE_RATE)):
            assert_same_prediction(prediction, truth)
        clock.now += 0.2
    assert head_reused == [False, True, False]


def test_an_object_moved_in_view_makes_the_next_frame_a_keyframe(scenes, tiny_model):
    rng, clock = np.random.default_rng(2), SteppedClock()
    full_inference = AffordancePredictor(tiny_model)
    predictor = with_reuse(full_inference, clock)
    scene = scenes[0]
    clip = sounds(1)[0]
    predictor.predict(camera_frame(scene.image, rng), clip, SAMPLE_RATE)
    for object_mask in scene.object_masks:
        moved = camera_frame(moved_object(scene.image, object_mask, MOVE_PX), rng)
        prediction = predictor.predict(moved, clip, SAMPLE_RATE)
        assert not predictor.view_reuse.last_reused, f"change {predictor.view_reuse.last_change:.3f}"
        assert not predictor.last_head_reused
        assert_same_prediction(prediction, full_inference.predict(moved, clip, SAMPLE_RATE))
        predictor.predict(camera_frame(scene.image, rng), clip, SAMPLE_RATE)  # back where it was
        assert not predictor.view_reuse.last_reused


def test_a_view_jumping_between_two_scenes_keeps_its_accuracy(scenes, tiny_model):
    rng, clock = np.random.default_rng(3), SteppedClock()
    full_inference = AffordancePredictor(tiny_model)
    predictor = with_reuse(full_inference, clock)
    for index, clip in enumerate(sounds(6)):
        frame = camera_frame(scenes[index % 2].image, rng)
        prediction = predictor.predict(frame, clip, SAMPLE_RATE)
        assert not predictor.view_reuse.last_reused
        assert_same_prediction(prediction, full_inference.predict(frame, clip, SAMPLE_RATE))
        clock.now += 0.1


def test_a_stale_keyframe_is_renewed_beside_the_stream_and_a_new_frame_size_is_recomputed(scenes, tiny_model):
    rng, clock = np.random.default_rng(4), SteppedClock()
    full_inference = AffordancePredictor(tiny_model)
    predictor = with_reuse(full_inference, clock, max_age_s=2.0)
    view, clip = scenes[0].image, sounds(1)[0]
    first = camera_frame(view, rng)
    predictor.predict(first, clip, SAMPLE_RATE)
    clock.now = 1.9
    predictor.predict(camera_frame(view, rng), clip, SAMPLE_RATE)
    assert predictor.view_reuse.last_reused and not predictor.view_reuse.renewing
    clock.now = 2.0  # the keyframe is 2 s old: this frame's view is renewed, and the old keyframe stands meanwhile
    renewed = camera_frame(view, rng)
    prediction = predictor.predict(renewed, clip, SAMPLE_RATE)
    assert predictor.view_reuse.last_reused
    predictor.view_reuse.wait_for_renewal()
    assert_same_prediction(prediction, full_inference.predict(first, clip, SAMPLE_RATE))
    clock.now = 2.5
    prediction = predictor.predict(camera_frame(view, rng), clip, SAMPLE_RATE)
    assert predictor.view_reuse.last_reused
    assert_same_prediction(prediction, full_inference.predict(renewed, clip, SAMPLE_RATE))
    assert predictor.view_reuse.diagnostics()["keyframe_age_s"] == pytest.approx(0.5)
    smaller = camera_frame(view[:240], rng)
    prediction = predictor.predict(smaller, clip, SAMPLE_RATE)
    assert not predictor.view_reuse.last_reused and math.isnan(predictor.view_reuse.last_change)
    assert prediction.function_mask.shape == (240, 640)
    assert_same_prediction(prediction, full_inference.predict(smaller, clip, SAMPLE_RATE))


class HeldEncoder:
    """An image side that returns the frame's mean grey level as its 'maps', and, once `hold` is set, waits
    until `release` before it does; it notes each pass's start, end and thread."""

    def __init__(self) -> None:
        self.hold, self.release = threading.Event(), threading.Event()
        self._changed = threading.Condition()
        self.events: list[tuple[str, float]] = []
        self.threads: list[threading.Thread] = []  # that ran each pass

    def __call__(self, frame: np.ndarray) -> list:
        level = float(frame.mean())
        self.threads.append(threading.current_thread())
        self._note("start", level)
        if self.hold.is_set():
            assert self.release.wait(10.0)
        self._note("end", level)
        return [level]

    def _note(self, what: str, level: float) -> None:
        with self._changed:
            self.events.append((what, level))
            self._changed.notify_all()

    def wait_for_events(self, count: int, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.events) >= count, timeout_s)


def grey(level: int) -> np.ndarray:
    return np.full((48, 64, 3), level, np.uint8)


def renewal_held(renewed: np.ndarray | None = None) -> tuple[SteppedClock, HeldEncoder, ViewReuse]:
    """A ViewReuse (max_age_s 2) whose keyframe, grey 100, was taken at 0 s, and at 2 s the frame `renewed` (grey
    100 if None), which is served the old keyframe and starts a renewal held until `encode.release` is set."""
    clock, encode = SteppedClock(), HeldEncoder()
    reuse = ViewReuse(REUSE_MAX_CHANGE, 2.0, clock=clock)
    assert reuse.maps_for(grey(100), encode) == [100.0]
    encode.hold.set()
    clock.now = 2.0
    assert reuse.maps_for(grey(100) if renewed is None else renewed, encode) == [100.0]
    assert reuse.renewing
    return clock, encode, reuse


def test_a_view_changing_during_a_renewal_waits_for_it_and_becomes_the_keyframe():
    clock, encode, reuse = renewal_held()
    assert encode.wait_for_events(3, 10.0)  # the first pass, and the renewal's start
    answer = []
    changed = threading.Thread(target=lambda: answer.append(reuse.maps_for(grey(150), encode)))
    changed.start()
    # A changed frame that did not wait would start its own pass now, beside the held renewal.
    assert not encode.wait_for_events(4, 2.0), f"a second image pass ran beside the renewal: {encode.events}"
    encode.release.set()
    changed.join(10.0)
    assert answer == [[150.0]]
    assert encode.events[2:] == [("start", 100.0), ("end", 100.0), ("start", 150.0), ("end", 150.0)]
    clock.now = 2.1
    assert reuse.maps_for(grey(150), encode) == [150.0] and reuse.last_reused  # the changed frame is the keyframe


def test_a_keyframe_stands_while_renewed_only_up_to_twice_max_age():
    clock, encode = SteppedClock(), HeldEncoder()
    reuse = ViewReuse(REUSE_MAX_CHANGE, 2.0, clock=clock)
    nudged = grey(100)
    nudged[0, 0] = 0  # the same view to the fingerprint (a change of 0.03), but its own mean grey level
    reuse.maps_for(grey(100), encode)
    clock.now = 100.0  # the stream paused (silence): the first frame after it must not get features 100 s old
    assert reuse.maps_for(nudged, encode) == [float(nudged.mean())]
    assert reuse.last_change < REUSE_MAX_CHANGE and not reuse.last_reused and not reuse.renewing
    encode.hold.set()
    clock.now = 102.0
    assert reuse.maps_for(grey(100), encode) == [float(nudged.mean())] and reuse.last_reused  # renewal held
    clock.now = 104.0  # the renewal fell behind: this frame waits for it, and then reuses what it renewed
    threading.Timer(0.5, encode.release.set).start()
    assert reuse.maps_for(grey(100), encode) == [100.0] and reuse.last_reused
    assert reuse.diagnostics()["keyframe_age_s"] == pytest.approx(2.0)  # the renewal's frame came at 102 s


def test_closing_waits_for_a_renewal_and_ends_its_thread():
    _, encode, reuse = renewal_held()
    threading.Timer(0.5, encode.release.set).start()
    reuse.close()
    assert encode.events[-1] == ("end", 100.0) and not reuse.renewing
    renewal_thread = encode.threads[-1]
    assert renewal_thread is not threading.current_thread() and not renewal_thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        reuse.maps_for(grey(100), encode)


def test_renewals_run_on_the_thread_given_and_closing_leaves_it_to_its_owner():
    """The node hands every configuration's ViewReuse the one renewal thread it keeps for its life
    (avag_ros.runtime.memory): a thread per configure took a malloc arena each time."""
    with ThreadPoolExecutor(max_workers=1) as owner:
        owners_thread = owner.submit(threading.current_thread).result()
        clock, encode = SteppedClock(), HeldEncoder()
        reuse = ViewReuse(REUSE_MAX_CHANGE, 2.0, clock=clock, renew_on=owner.submit)
        reuse.maps_for(grey(100), encode)
        clock.now = 2.0
        reuse.maps_for(grey(100), encode)  # stale: renewed on the owner's thread
        reuse.close()  # after the renewal it waited for
        assert encode.threads[-1] is owners_thread and encode.events[-1] == ("end", 100.0)
        assert owner.submit(threading.current_thread).result() is owners_thread


def test_a_renewal_reads_the_frame_it_was_given():
    buffer = grey(100)
    buffer[0, 0] = 0  # within max_change of the keyframe, and its own mean
    clock, encode, reuse = renewal_held(buffer)
    expected = float(buffer.mean())
    buffer[:] = 0  # the caller's next frame in the same buffer, before the renewal reads it
    encode.release.set()
    reuse.wait_for_renewal()
    clock.now = 2.1
    assert reuse.maps_for(grey(100), encode) == [expected]


def test_a_failed_renewal_raises_once_and_the_next_stale_frame_tries_again():
    clock = SteppedClock()
    outcomes = iter([[1.0], RuntimeError("out of memory in the image pass"), [2.0]])

    def encode(frame: np.ndarray) -> list:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    reuse = ViewReuse(REUSE_MAX_CHANGE, 2.0, clock=clock)
    reuse.maps_for(grey(100), encode)
    clock.now = 2.0
    assert reuse.maps_for(grey(100), encode) == [1.0]  # its renewal fails
    reuse.wait_for_renewal()
    with pytest.raises(RuntimeError, match="renewing the keyframe's image features failed: .*out of memory"):
        reuse.maps_for(grey(100), encode)
    assert reuse.maps_for(grey(100), encode) == [1.0]  # stale still: a new renewal, which succeeds
    reuse.wait_for_renewal()
    assert reuse.maps_for(grey(100), encode) == [2.0]


@pytest.mark.parametrize("max_change, max_age_s", [(0.0, REUSE_MAX_AGE_S), (REUSE_MAX_CHANGE, 0.0)])
def test_zero_turns_reuse_off(scenes, tiny_model, max_change, max_age_s):
    rng, clock = np.random.default_rng(5), SteppedClock()
    predictor = with_reuse(AffordancePredictor(tiny_model), clock, max_change, max_age_s)
    for _ in range(3):
        predictor.predict(camera_frame(scenes[0].image, rng), sounds(1)[0], SAMPLE_RATE)
        assert not predictor.view_reuse.last_reused
    assert predictor.view_reuse.diagnostics()["reuse_ratio"] == 0.0


def test_diagnostics_count_decisions_over_their_window():
    clock = SteppedClock()
    reuse = ViewReuse(REUSE_MAX_CHANGE, 100.0, window_s=10.0, clock=clock)
    view = np.full((48, 64, 3), 128, np.uint8)
    computed = []
    for _ in range(4):  # one keyframe, three reuses
        reuse.maps_for(view, lambda frame: computed.append(1) or ["maps"])
        clock.now += 1.0
    assert len(computed) == 1
    assert reuse.diagnostics() == {"reuse_ratio": 0.75, "keyframe_age_s": 4.0, "view_change": 0.0}
    clock.now = 12.5  # only the last frame, a reuse, is within the window
    assert reuse.diagnostics()["reuse_ratio"] == 1.0


@pytest.mark.parametrize("sigma, noise_share", [(2.0, 0.6), (3.0, 0.85)])
def test_the_default_max_change_lies_between_sensor_noise_and_a_moved_object(scenes, sigma, noise_share):
    """The noise of two exposures stays under the default, every object pushed by 2.5 % of the width goes over it."""
    rng = np.random.default_rng(6)
    for scene in scenes:
        view = scene.image
        noise = [view_change(view_fingerprint(camera_frame(view, rng, sigma)),
                             view_fingerprint(camera_frame(view, rng, sigma))) for _ in range(5)]
        assert max(noise) < REUSE_MAX_CHANGE * noise_share
        for mask in scene.object_masks:
            moved = camera_frame(moved_object(view, mask, MOVE_PX), rng, sigma)
            assert view_change(view_fingerprint(moved), view_fingerprint(camera_frame(view, rng, sigma))) \
                > REUSE_MAX_CHANGE
