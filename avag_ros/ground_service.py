"""The node's `~/ground` service (avag_interfaces/GroundAffordance): one whole clip grounded in one image, or in the
newest camera frame, by the inference thread between two stream frames.

The service callback decodes and checks the request, hands it to the inference thread through a `GroundQueue` and
waits for the answer. It waits on a thread of its own: the node spins on rclpy's EventsExecutor, which runs every
callback on its one thread, so a callback that waited there would hold back every camera image meanwhile; and an
`async def` callback is no way out on every rclpy: 7.1's EventsExecutor (Jazzy) takes the coroutine for the
response and never answers. So the service lives on a small helper node, `<node>_ground`, spun by a
SingleThreadedExecutor in its own thread; its name is still the node's `~/ground` (with the node's namespace and
remappings).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sensor_msgs.msg import Image

from .audio.sound_events import loudest_level_db
from .audio.pcm import PCM_FORMATS, check_audio_info, pcm_to_float
from .messages.grounding import Heard, grounding_message
from .messages.images import Frame, check_image, frame_to_rgb

# Longest a request waits for the inference thread: a model load or an export can hold it for minutes, and a
# planner is better told than left waiting on a reply that may never come.
ANSWER_TIMEOUT_S = 30.0
SPIN_PERIOD_S = 0.1
MIN_CLIP_S = 0.1  # two 50 ms level frames: less is too little sound to ground


@dataclass(frozen=True)
class GroundRequest:
    """A checked request: the clip as mono float32 in [-1, 1] at its rate, the image (None: the newest camera
    frame), and when it was received on the node's clock, which places the clip in time: it ended then."""
    audio: np.ndarray
    sample_rate: int
    image: Image | None
    received_ns: int = 0


def decode_request(request, received_ns: int = 0, min_clip_s: float = MIN_CLIP_S) -> GroundRequest:
    """A GroundAffordance request as a GroundRequest, or ValueError saying what is wrong with it."""
    info = request.audio_info
    reason = check_audio_info(info)
    if reason is not None:
        raise ValueError(f"audio_info: {reason}")
    data = bytes(request.audio.data)
    if not data:
        raise ValueError("audio: the clip is empty")
    frame_bytes = np.dtype(PCM_FORMATS[info.sample_format]).itemsize * info.channels
    if len(data) % frame_bytes:
        raise ValueError(f"audio: {len(data)} bytes are no whole number of {info.sample_format} frames of "
                         f"{info.channels} channel(s) ({frame_bytes} bytes each)")
    try:
        audio = pcm_to_float(data, info.sample_format, info.channels)
    except ValueError as error:
        raise ValueError(f"audio: {error}") from None
    if not np.isfinite(audio).all():
        raise ValueError("audio: the clip contains NaN or infinite samples")
    seconds = audio.size / info.sample_rate
    if seconds < min_clip_s:
        raise ValueError(f"audio: the clip is {seconds * 1000:.0f} ms long; at least {min_clip_s * 1000:.0f} ms "
                         "are needed")
    image = request.image
    if image.width == 0:
        return GroundRequest(audio, int(info.sample_rate), None, received_ns)
    try:
        check_image(image)
    except ValueError as error:
        raise ValueError(f"image: {error}") from None
    return GroundRequest(audio, int(info.sample_rate), image, received_ns)


class PendingGround:
    """One request on its way through the inference thread, and its answer once given."""

    def __init__(self, request: GroundRequest) -> None:
        self.request = request
        self.success = False
        self.message = ""
        self.grounding = None  # avag_interfaces/AffordanceGrounding, on success
        self._answered = threading.Event()
        self._answering = threading.Lock()  # the inference thread and the timeout may answer at the same moment

    def answer(self, success: bool, message: str, grounding=None) -> None:
        with self._answering:
            if self._answered.is_set():  # a request withdrawn after its timeout keeps the answer it was given
                return
            self.success, self.message, self.grounding = success, message, grounding
            self._answered.set()

    def wait(self, timeout_s: float) -> bool:
        return self._answered.wait(timeout_s)


class GroundQueue:
    """Requests waiting for the inference thread. `wake` tells the inference loop that one is waiting (it may be
    asleep waiting for a camera frame). Thread-safe. While closed (the node is not active) requests are refused."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._waiting: deque[PendingGround] = deque()
        self._lock = threading.Lock()
        self._closed_reason: str | None = "the node is not active"

    def open(self) -> None:
        with self._lock:
            self._closed_reason = None

    def close(self, reason: str) -> None:
        """Refuse what waits and what comes, with `reason`."""
        with self._lock:
            self._closed_reason = reason
            waiting, self._waiting = list(self._waiting), deque()
        for pending in waiting:
            pending.answer(False, reason)

    def submit(self, pending: PendingGround) -> None:
        with self._lock:
            reason = self._closed_reason
            if reason is None:
                self._waiting.append(pending)
        if reason is not None:
            pending.answer(False, reason)
            return
        self._wake()

    def withdraw(self, pending: PendingGround) -> None:
        with self._lock:
            if pending in self._waiting:
                self._waiting.remove(pending)

    def waiting(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def take(self) -> PendingGround | None:
        with self._lock:
            return self._waiting.popleft() if self._waiting else None


def ground(pending: PendingGround, newest_image: Frame | None, predictor,
           min_level_db: float) -> None:
    """Answer one request; run by the inference thread. The grounding carries the image's header; the sound event
    is the clip's loudest 50 ms reaching `min_level_db`, as for the stream, and its audio span is the clip ending
    when the request was received (event_id 0: not one of the stream's events). No 3D: a request's image has no
    depth."""
    request = pending.request
    image = request.image if request.image is not None else newest_image
    if image is None:
        pending.answer(False, "no camera frame received yet: send one in the request's image")
        return
    try:
        rgb = frame_to_rgb(image)
        prediction = predictor.predict(rgb, request.audio, request.sample_rate)
    except ValueError as error:
        pending.answer(False, str(error))
        return
    level = loudest_level_db(request.audio, request.sample_rate)
    start_ns = request.received_ns - round(request.audio.size * 1e9 / request.sample_rate)
    last_ns = request.received_ns - round(1e9 / request.sample_rate)
    grounding = grounding_message(image.header, prediction.function_mask, prediction.dependency_mask,
                                  prediction.function_prob, prediction.dependency_prob, level >= min_level_db, level,
                                  Heard(0, start_ns, start_ns, last_ns))
    source = "the request's image" if request.image is not None else "the newest camera frame"
    pending.answer(True, f"{request.audio.size / request.sample_rate:.2f} s of audio grounded in {source} "
                         f"({rgb.shape[1]}x{rgb.shape[0]})", grounding)


class GroundService:
    """`~/ground` of `node`, answered from `queue`: lives from configure to cleanup, as the node's publishers."""

    def __init__(self, node, queue: GroundQueue, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        from avag_interfaces.srv import GroundAffordance
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.queue, self.answer_timeout_s = queue, answer_timeout_s
        self._clock = node.get_clock()  # the node's, sim time included: the helper's own follows no use_sim_time
        self.name = node.resolve_service_name("~/ground")
        # No global arguments: a `__node:=` remapping meant for the grounding node must not rename this one too.
        self.helper = Node(f"{node.get_name()}_ground", namespace=node.get_namespace(), context=node.context,
                           use_global_arguments=False, start_parameter_services=False)
        self.helper.create_service(GroundAffordance, self.name, self._serve)
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self.helper)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ground_service", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.helper.context.ok():
            self._executor.spin_once(timeout_sec=SPIN_PERIOD_S)

    def _serve(self, request, response):
        try:
            pending = PendingGround(decode_request(request, self._clock.now().nanoseconds))
        except ValueError as error:
            response.success, response.message = False, str(error)
            return response
        self.queue.submit(pending)
        if not pending.wait(self.answer_timeout_s):
            self.queue.withdraw(pending)
            pending.answer(False, f"no answer from the inference thread within {self.answer_timeout_s:g} s")
        response.success, response.message = pending.success, pending.message
        if pending.grounding is not None:
            response.grounding = pending.grounding
        return response

    def destroy(self) -> None:
        self.queue.close("the node is shutting down")
        self._stop.set()
        self._thread.join()
        self._executor.shutdown(timeout_sec=1.0)
        self.helper.destroy_node()
