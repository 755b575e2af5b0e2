"""The node's `~/ground_next_sound` action (avag_interfaces/GroundNextSound): a planner's "when you hear it, tell me
where".

A goal waits for the first sound event that begins after it was accepted (avag_ros.audio.sound_events), then until that
event holds `min_heard_s` of audio (or, with `wait_for_end`, until it ends or fills audio.window_s), and gets the
grounding of the event's clip at that moment on the newest camera frame, with 3D when depth is on. The inference
thread makes it between two stream frames, as it answers ~/ground; goals waiting on the same event and clip share
one grounding.

No goal holds a thread while it waits. The server lives on the ~/ground helper node (avag_ros.ground_service), whose
executor spins in its own thread; its accepted-goal callback only registers the goal, and the goal is executed
once its outcome is known, by an execute callback that just reports it (rclpy's deferred execution). A coroutine
that awaited the event instead would be resumed on every turn of rclpy's executor (up to 9.1), a busy loop. A
watcher thread looks at the sound events every WATCH_S while goals wait: it publishes their feedback, times them
out and hands ready events to the inference thread. A cancel ends its goal at once.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .ground_service import GroundQueue
from .parameters import GroundingSettings
from .audio.sound_events import EventClip, EventState, SoundEvent, SoundEvents

WATCH_S = 0.05
FEEDBACK_S = 0.25  # at least every 0.5 s, as the action promises
REPORT_WAIT_S = 1.0


@dataclass
class EventGrounding:
    """A job for the inference thread: ground `clip` of `event` on the newest camera frame (with 3D when depth is
    on). `answer` reaches every goal that waits on it."""
    event: SoundEvent
    clip: EventClip
    answered: Callable[[bool, str, object], None]

    def answer(self, success: bool, message: str, grounding=None) -> None:
        self.answered(success, message, grounding)


@dataclass
class WaitingGoal:
    handle: object  # rclpy.action.server.ServerGoalHandle
    accepted_ns: int  # on the node's clock: the event must begin at or after it
    accepted_at: float  # monotonic: timeouts and feedback
    timeout_s: float
    min_heard_s: float  # 0: audio.min_event_s
    wait_for_end: bool
    event: SoundEvent | None = None  # the event it answers, once it began
    job: tuple | None = None  # the key of the grounding job it waits on
    next_feedback: float = 0.0
    outcome: tuple[bool, str, object] | None = None  # (success, message, grounding) once finished


@dataclass
class Goals:
    """The waiting goals, shared between the executor (accept, cancel), the watcher and the inference thread."""
    waiting: list[WaitingGoal] = field(default_factory=list)
    jobs: dict[tuple, list[WaitingGoal]] = field(default_factory=dict)
    closed_reason: str | None = "the node is not active"


class NextSoundGoals:
    """The action's logic apart from the action server: `events` and `settings()` as the inference loop has them,
    `queue` the inference thread's (avag_ros.ground_service.GroundQueue), `now_ns` the node's clock, `finish`
    executes a goal whose outcome is set (the server's), `log` the node's logger."""

    def __init__(self, events: SoundEvents, settings: Callable[[], GroundingSettings], queue: GroundQueue,
                 now_ns: Callable[[], int], finish: Callable[[WaitingGoal], None],
                 feedback: Callable[[WaitingGoal, EventState], None], log) -> None:
        self._events, self._settings, self._queue, self._now_ns = events, settings, queue, now_ns
        self._finish, self._feedback, self._log = finish, feedback, log
        self._goals = Goals()
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="ground_next_sound", daemon=True)
        self._thread.start()

    # the executor's side ----------------------------------------------------------------------------------------
    def accepting(self) -> bool:
        with self._lock:
            return self._goals.closed_reason is None

    def add(self, handle) -> None:
        """An accepted goal starts waiting; one whose request is out of range ends at once, saying why."""
        request = handle.request
        goal = WaitingGoal(handle, self._now_ns(), time.monotonic(), request.timeout_s, request.min_heard_s,
                           request.wait_for_end)
        reason = next((f"{name} must be a number of seconds, 0 or more, got {value}"
                       for name, value in (("timeout_s", goal.timeout_s), ("min_heard_s", goal.min_heard_s))
                       if not (math.isfinite(value) and value >= 0)), None)
        with self._lock:
            if reason is None and self._goals.closed_reason is not None:
                reason = self._goals.closed_reason
            if reason is None:
                self._goals.waiting.append(goal)
                self._lock.notify_all()
                return
        self._end(goal, False, reason)

    def cancel(self, handle) -> bool:
        """Ends a waiting goal as canceled; False if it is not waiting (it ended meanwhile)."""
        with self._lock:
            goal = next((g for g in self._goals.waiting if g.handle is handle), None)
        if goal is None:
            return False
        self._end(goal, False, "canceled")
        return True

    def open(self) -> None:
        with self._lock:
            self._goals.closed_reason = None

    def close(self, reason: str) -> None:
        """Refuse new goals and end the waiting ones with `reason`."""
        with self._lock:
            self._goals.closed_reason = reason
            waiting = list(self._goals.waiting)
        for goal in waiting:
            self._end(goal, False, reason)

    def destroy(self) -> None:
        self.close("the node is shutting down")
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join()

    # outcomes -----------------------------------------------------------------------------------------------------
    def _end(self, goal: WaitingGoal, success: bool, message: str, grounding=None) -> None:
        """Sets a goal's outcome once, whoever comes first, and has the server execute it."""
        with self._lock:
            if goal.outcome is not None:
                return
            goal.outcome = (success, message, grounding)
            if goal in self._goals.waiting:
                self._goals.waiting.remove(goal)
            if goal.job is not None and goal in self._goals.jobs.get(goal.job, []):
                self._goals.jobs[goal.job].remove(goal)
        self._finish(goal)

    def _answered(self, key: tuple) -> Callable[[bool, str, object], None]:
        def answer(success: bool, message: str, grounding) -> None:
            with self._lock:
                goals = self._goals.jobs.pop(key, [])
            for goal in goals:
                self._end(goal, success, message, grounding)
        return answer

    # the watcher -------------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._goals.waiting:
                    self._lock.wait()
                if self._stopped:
                    return
                waiting = [g for g in self._goals.waiting if g.job is None]
            try:
                settings = self._settings()
                state = self._events.update(settings.audio_min_level_db, settings.audio_hold_s,
                                            settings.audio_change_threshold)
                now = time.monotonic()
                for goal in waiting:
                    self._look(goal, state, settings, now)
            except Exception as error:  # the goals' timeouts and feedback live on this thread: it must go on
                self._log.error(f"~/ground_next_sound's watcher: {error!r}", throttle_duration_sec=5.0)
            with self._lock:
                self._lock.wait(WATCH_S)

    def _look(self, goal: WaitingGoal, state: EventState, settings: GroundingSettings, now: float) -> None:
        event = state.event
        if goal.event is None:
            for candidate in (state.ended, event):  # the ended one first: it began earlier
                if candidate is not None and candidate.onset_ns >= goal.accepted_ns:
                    goal.event = candidate
                    break
        if goal.event is not None:
            if goal.event.id not in (getattr(state.event, "id", None), getattr(state.ended, "id", None)):
                self._end(goal, False, f"sound event {goal.event.id} ended before it could be grounded")
                return
            end = self._ready_at(goal, state, settings)
            if end is not None:
                self._ground(goal, end, settings)
                return
        waited = now - goal.accepted_at
        if goal.timeout_s > 0 and waited >= goal.timeout_s:
            why = ("no sound event began" if goal.event is None else
                   f"sound event {goal.event.id} had not " + ("ended" if goal.wait_for_end else
                                                               f"held {self._min_heard(goal, settings):g} s"))
            self._end(goal, False, f"timed out after {goal.timeout_s:g} s: {why}")
        elif now >= goal.next_feedback:
            goal.next_feedback = now + FEEDBACK_S
            self._feedback(goal, state)

    @staticmethod
    def _min_heard(goal: WaitingGoal, settings: GroundingSettings) -> float:
        return goal.min_heard_s or settings.audio_min_event_s

    def _ready_at(self, goal: WaitingGoal, state: EventState, settings: GroundingSettings) -> int | None:
        """Where the goal's event's clip ends if it is ready to be grounded now, else None. The event is the
        current one or the last that ended."""
        if state.event is not None and state.event.id == goal.event.id:
            enough = settings.audio_window_s if goal.wait_for_end else self._min_heard(goal, settings)
            return state.analysed if state.ready(enough, settings.audio_change_threshold) else None
        return state.ended_at  # over, however short: all of it there is (a knock, a click)

    def _ground(self, goal: WaitingGoal, end: int, settings: GroundingSettings) -> None:
        try:
            clip = self._events.clip(goal.event, end, settings.audio_window_s)
        except ValueError as error:
            self._end(goal, False, f"sound event {goal.event.id} cannot be grounded: {error}")
            return
        key = (goal.event.id, clip.start, clip.end)
        with self._lock:
            if goal.outcome is not None:
                return
            goal.job = key
            shared = key in self._goals.jobs
            self._goals.jobs.setdefault(key, []).append(goal)
        if not shared:
            self._queue.submit(EventGrounding(goal.event, clip, self._answered(key)))


class NextSoundServer:
    """The ActionServer `name` on the helper node `node`, for the goals of `goals`' making."""

    def __init__(self, node, name: str, events: SoundEvents, settings: Callable[[], GroundingSettings],
                 queue: GroundQueue, now_ns: Callable[[], int]) -> None:
        from avag_interfaces.action import GroundNextSound
        from rclpy.action import ActionServer, CancelResponse, GoalResponse

        self._action = GroundNextSound
        self.goals = NextSoundGoals(events, settings, queue, now_ns, self._execute_later, self._send_feedback,
                                    node.get_logger())
        self._outcomes: dict[int, WaitingGoal] = {}  # goals ended and not yet reported, by their handle's id
        self._server = ActionServer(
            node, GroundNextSound, name, execute_callback=self._report,
            goal_callback=lambda request: GoalResponse.ACCEPT if self.goals.accepting() else GoalResponse.REJECT,
            handle_accepted_callback=self.goals.add,
            cancel_callback=lambda handle: CancelResponse.ACCEPT if self.goals.cancel(handle)
            else CancelResponse.REJECT)

    def _execute_later(self, goal: WaitingGoal) -> None:
        self._outcomes[id(goal.handle)] = goal
        goal.handle.execute()  # from any thread: the helper's executor runs _report

    def _report(self, handle):
        """The execute callback, run once a goal's outcome is known."""
        success, message, grounding = self._outcomes.pop(id(handle)).outcome
        if success:
            handle.succeed()
        elif handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        result = self._action.Result(success=success, message=message)
        if grounding is not None:
            result.grounding = grounding
        return result

    def _send_feedback(self, goal: WaitingGoal, state: EventState) -> None:
        event = state.event
        goal.handle.publish_feedback(self._action.Feedback(
            audio_level_db=state.level_db, sound_event_active=event is not None,
            event_id=event.id if event is not None else 0, event_heard_s=state.heard_s,
            waited_s=time.monotonic() - goal.accepted_at))

    def destroy(self) -> None:
        """Ends the waiting goals ("the node is shutting down") and gives the helper's executor a moment to report
        them before the server goes."""
        self.goals.destroy()
        deadline = time.monotonic() + REPORT_WAIT_S
        while self._outcomes and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server.destroy()
