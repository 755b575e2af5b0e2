"""Sound events (avag_ros.audio.sound_events): onsets, ends, changes of sound, and the clip each event gives the model.

Streams are written into a real RingBuffer in 10 or 20 ms blocks, as the audio sources write them, and analysed
as the node does (an update per block). The truths: the level rule computed here in plain numpy over the known
audio, the front end (avag_core.audio.waveform_to_examples) on the known audio at the expected place, and the
known place where a sound begins or one sound turns into another.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from avag_core.audio import load_audio, waveform_to_examples
from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, synthesize_sound
from avag_ros.audio.ring_buffer import RingBuffer
from avag_ros.audio.sound_events import (CHANGE_SUSPECT, CHANGE_SUSPECT_MAX_S, PRE_ROLL_S, SoundEvents,
                                         change_point, change_score, clip_span, loudest_level_db)
from avag_ros.parameters import spec
from conftest import sample_dir

MIN_LEVEL_DB = -50.0
HOLD_S = 1.0
THRESHOLD = spec("audio.change_threshold").default


def quiet(seconds: float, rate: int = SAMPLE_RATE, rms: float = 0.0005, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, rms, int(round(seconds * rate))).astype(np.float32)


def noise(seconds: float, rate: int = SAMPLE_RATE, rms: float = 0.1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, rms, int(round(seconds * rate))).astype(np.float32)


def sound(name: str, seconds: float, seed: int = 0) -> np.ndarray:
    category = next(c for c in CATEGORIES if c.object == name)
    return synthesize_sound(np.random.default_rng(seed), category.sound, seconds)


class Stream:
    """A RingBuffer fed like a microphone (blocks stamped with the time of their last sample, from 0) and the
    node's SoundEvents over it, updated after every block."""

    def __init__(self, rate: int = SAMPLE_RATE, capacity_s: float = 6.0, threshold: float = THRESHOLD) -> None:
        self.rate, self.threshold = rate, threshold
        self.buffer = RingBuffer(rate, capacity_s)
        self.events = SoundEvents(lambda: self.buffer, itertools.count(1))
        self.states = []

    def play(self, audio: np.ndarray, block_s: float = 0.01, every: int = 1):
        """Writes `audio` block by block; returns the states seen after every `every`-th block."""
        block = int(round(block_s * self.rate))
        seen = []
        for index, start in enumerate(range(0, audio.size - block + 1, block)):
            written = self.buffer.written + block
            self.buffer.write(audio[start:start + block], round((written - 1) * 1e9 / self.rate))
            if index % every == 0:
                seen.append(self.events.update(MIN_LEVEL_DB, HOLD_S, self.threshold))
        self.states += seen
        return seen

    def events_seen(self):
        return list({state.event.id: state.event for state in self.states if state.event is not None}.values())


def levels_by_hop(audio: np.ndarray, rate: int) -> np.ndarray:
    """The level rule in plain numpy: the RMS in dBFS of the 50 ms ending at each 10 ms hop from the first sample."""
    hop = rate // 100
    ends = np.arange(5 * hop, audio.size + 1, hop)
    return np.array([10 * math.log10(max(np.mean(audio[end - 5 * hop:end].astype(np.float64) ** 2), 1e-12))
                     for end in ends]), ends - 5 * hop


def test_the_loudest_level_is_the_loudest_50_ms_ending_at_a_hop():
    rate = 16000
    clip = quiet(1.0, rate)
    clip[5030:5830] = np.where(np.arange(800) % 2, 0.5, -0.5)  # 50 ms of RMS 0.5, not on the hop grid
    levels, _ = levels_by_hop(clip, rate)
    assert loudest_level_db(clip, rate) == pytest.approx(levels.max(), abs=1e-9)
    assert -7.0 < loudest_level_db(clip, rate) < 20 * math.log10(0.5)  # the burst straddles two windows
    assert loudest_level_db(np.zeros(rate, np.float32), rate) == -120.0
    assert loudest_level_db(np.full(400, 0.1, np.float32), rate) == pytest.approx(-20.0, abs=1e-6)  # under 50 ms


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_an_event_begins_at_the_first_50_ms_at_the_level_and_ends_hold_s_after_the_last(rate):
    sound_start = int(1.2345 * rate)
    audio = np.concatenate([quiet(1.2345, rate), noise(0.5, rate, rms=0.05), quiet(2.0, rate)])
    sound_end = sound_start + int(round(0.5 * rate))
    stream = Stream(rate)
    states = stream.play(audio)
    levels, starts = levels_by_hop(audio, rate)
    loud = np.flatnonzero(levels >= MIN_LEVEL_DB)
    onset = starts[loud[0]]  # the start of the first 50 ms at the level
    assert sound_start - 5 * (rate // 100) < onset <= sound_start
    (event,) = stream.events_seen()
    assert (event.id, event.onset, event.cause) == (1, onset, "level")
    assert event.clip_start == onset - round(PRE_ROLL_S * rate)
    assert event.onset_ns == round((onset) * 1e9 / rate)  # the stamps count from the first sample at 0
    # active from the onset until hold_s after the last 50 ms at the level
    last_loud_end = starts[loud[-1]] + 5 * (rate // 100)
    assert sound_end <= last_loud_end < sound_end + 5 * (rate // 100)
    for state in states:
        expected = onset + 5 * (rate // 100) <= state.analysed < last_loud_end + HOLD_S * rate
        assert (state.event is not None) == expected, state.analysed / rate
        assert state.audio_error is None
    # once over, the event is the last that ended, its audio ending with its last 50 ms at the level
    assert (states[-1].ended, states[-1].ended_at) == (event, last_loud_end)
    whole = stream.events.clip(event, last_loud_end, 2.0)
    assert (whole.start, whole.end) == (event.clip_start, last_loud_end)  # under one window: all of it


def test_a_clip_keeps_its_samples_distances_when_the_blocks_stamps_jitter():
    """A microphone's blocks are stamped by a clock read when each arrives, a little early or late. The onset is
    dated when the event begins and the clip later: both must be dated from one block, or a clip that begins
    at its pre-roll seems to begin more than the pre-roll before its onset."""
    rate = 16000
    stream = Stream(rate)
    jitter = np.random.default_rng(0).uniform(-2e6, 2e6, 400).astype(int)  # +-2 ms per block
    audio = np.concatenate([quiet(1.0, rate), noise(1.5, rate, rms=0.05), quiet(1.5, rate)])
    block = rate // 100
    for index, start in enumerate(range(0, audio.size - block + 1, block)):
        written = stream.buffer.written + block
        stream.buffer.write(audio[start:start + block], round((written - 1) * 1e9 / rate) + int(jitter[index]))
        state = stream.events.update(MIN_LEVEL_DB, HOLD_S, THRESHOLD)
        if state.event is not None:
            clip = stream.events.clip(state.event, state.analysed, 2.0)
            onset = state.event.onset
            assert abs((clip.onset_ns - clip.start_ns) - (onset - clip.start) * 1e9 / rate) <= 1
            assert abs((clip.end_ns - clip.onset_ns) - (clip.end - 1 - onset) * 1e9 / rate) <= 1


def longest_run_s(flags) -> float:
    """The longest run of consecutive true flags, one per 10 ms hop, in seconds."""
    longest = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest * 0.01


def test_a_suspected_change_holds_masks_back_for_at_most_the_suspect_span():
    """A change score past CHANGE_SUSPECT of the threshold holds the event's masks back, since a change is found
    0.1-0.2 s after it; a score that stays there longer (a varied sound, or a change the threshold misses) must
    not withhold the event's masks for good."""
    audio = np.concatenate([quiet(0.5), sound("mug", 1.5), sound("hammer", 1.5), quiet(1.5)])
    scores = [state.change_score for state in Stream(threshold=1e6).play(audio)]
    threshold = 1.1 * max(scores)  # no change is found, and the join keeps the score past the suspect level
    stream = Stream(threshold=threshold)
    states = stream.play(audio)
    assert [state.change_score for state in states] == scores and len(stream.events_seen()) == 1  # no change
    suspect = [score >= CHANGE_SUSPECT * threshold for score in scores]
    assert longest_run_s(suspect) >= CHANGE_SUSPECT_MAX_S + 0.1
    held = [state.changing(threshold) for state in states]
    assert any(held) and all(flag for flag, hold in zip(suspect, held) if hold)
    assert longest_run_s(held) <= CHANGE_SUSPECT_MAX_S + 1e-9
    # past the span, the event is ready again though its score is still past the suspect level
    assert any(state.ready(0.3, threshold) and flag for state, flag in zip(states, suspect))


def test_quiet_and_a_sound_below_the_level_make_no_event():
    stream = Stream()
    stream.play(np.concatenate([quiet(2.0), noise(1.0, rms=0.002), quiet(1.0)]))  # -54 dBFS
    assert stream.events_seen() == [] and all(state.level_db < MIN_LEVEL_DB for state in stream.states)


@pytest.mark.parametrize("window_s, examples", [(0.96, 1), (1.92, 2), (2.0, 2), (19.2, 20)])
def test_the_clip_holds_every_whole_window_that_fits(window_s, examples):
    """audio.window_s counts whole 0.96 s windows, the 15 ms overhang aside: 19.2 s is the model's 20 windows."""
    rate = 16000
    audio = noise(window_s + 3.0, rate)
    start, end = clip_span(1234, audio.size, window_s, rate)
    assert waveform_to_examples(audio[start:end], rate).shape[0] == examples
    assert (start - 1234) % round(0.96 * rate) == 0


def test_the_clip_span_rule_by_the_sample():
    rate, grid, overhang = 16000, 15360, 240  # 0.96 s; the last analysis frame reads 15 ms past it
    assert clip_span(1000, 1000 + 8000, 2.0, rate) == (1000, 9000)  # under one window: all of it
    assert clip_span(1000, 1000 + grid + overhang - 1, 2.0, rate) == (1000, 1000 + grid + overhang - 1)
    assert clip_span(1000, 1000 + grid + overhang, 2.0, rate) == (1000, 1000 + grid + overhang)
    assert clip_span(1000, 1000 + 2 * grid + overhang - 1, 2.0, rate) == (1000, 1000 + grid + overhang)
    assert clip_span(1000, 1000 + 3 * grid + overhang + 5, 2.0, rate) == (1000 + grid, 1000 + 3 * grid + overhang)
    assert clip_span(1000, 1000 + 3 * grid + overhang, 0.96, rate) == (1000 + 2 * grid, 1000 + 3 * grid + overhang)
    assert clip_span(1000, 9000, 0.5, rate) == (1000, 9000)  # under one window: the last 0.5 s, or what there is
    assert clip_span(1000, 30000, 0.5, rate) == (22000, 30000)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_the_clip_is_the_event_alone_on_a_grid_anchored_at_its_onset(rate):
    """The clip at each 10 ms of a sound that begins after quiet, and what the front end makes of it: until one
    window is whole, all the event's audio from the pre-roll on (which the front end zero-pads to 1 s); then the
    last whole windows from the clip's start that fit in 2.0 s, changing once per window; never a sample from
    before the pre-roll."""
    audio = np.concatenate([quiet(1.037, rate), noise(4.5, rate)])
    stream = Stream(rate)
    clips = []
    for state in stream.play(audio):
        if state.event is not None:
            clips.append((state.analysed, stream.events.clip(state.event, state.analysed, 2.0)))
    (event,) = stream.events_seen()
    grid, overhang = round(0.96 * rate), math.ceil(0.015 * rate)
    assert clips[0][1].start == event.clip_start
    for index, (analysed, clip) in enumerate(clips):
        assert np.array_equal(clip.samples, audio[clip.start:clip.end])
        heard = analysed - event.clip_start
        whole = (heard - overhang) // grid
        if heard < grid + overhang:
            assert (clip.start, clip.end) == (event.clip_start, analysed)
        else:
            assert (clip.start, clip.end) == (event.clip_start + (whole - min(whole, 2)) * grid,
                                              event.clip_start + whole * grid + overhang)
        if index % 7:  # the front end every 70 ms: each place of the grid, at less cost
            continue
        examples = waveform_to_examples(clip.samples, rate)
        if heard < grid + overhang:
            assert examples.shape[0] == 1
            torch.testing.assert_close(examples, waveform_to_examples(audio[event.clip_start:analysed], rate))
        else:
            assert examples.shape[0] == min(whole, 2)
            if rate == 16000:  # no resampling: the very examples of the event's audio at that place
                everything = waveform_to_examples(audio[event.clip_start:analysed], rate)
                torch.testing.assert_close(examples, everything[whole - min(whole, 2):whole])
    whole_clips = [clip for analysed, clip in clips if analysed - event.clip_start >= grid + overhang]
    changes = sum(a.start != b.start or a.end != b.end for a, b in zip(whole_clips, whole_clips[1:]))
    assert changes == (whole_clips[-1].end - whole_clips[0].end) // grid


def test_a_change_of_sound_without_quiet_begins_a_new_event_where_it_changed():
    hammer, mug = sound("hammer", 4.0, seed=1), sound("mug", 3.0, seed=2)
    change = int(1.0 * SAMPLE_RATE) + hammer.size
    stream = Stream()
    stream.play(np.concatenate([quiet(1.0), hammer, mug, quiet(2.0)]), block_s=0.02)
    first, second = stream.events_seen()
    assert first.cause == "level" and second.cause == "change" and second.id == first.id + 1
    assert abs(second.onset - change) <= 0.03 * SAMPLE_RATE and second.clip_start == second.onset
    ended = next(s for s in stream.states if s.ended is not None)
    assert (ended.ended, ended.ended_at) == (first, second.onset)  # the old sound ends where the new one begins
    # before the change is found, the old event is seen to be changing: its masks are held back from then on
    old = [s for s in stream.states if s.event is not None and s.event.id == first.id]
    suspected = [s.analysed for s in old if s.changing(THRESHOLD)]
    assert suspected and change <= suspected[0] and not any(s.changing(THRESHOLD) for s in old
                                                            if s.analysed < change)
    # once the change is found, the new event's clip holds none of the hammer
    after = [s for s in stream.states if s.event is not None and s.event.id == second.id]
    assert all(stream.events.clip(s.event, s.analysed, 2.0).start >= second.clip_start for s in after[:1])


@pytest.mark.parametrize("name", ["hammer", "mug", "lamp", "drawer", "knife"])
def test_one_synthetic_sound_is_one_event(name):
    stream = Stream()
    stream.play(np.concatenate([quiet(0.5), sound(name, 8.0, seed=3), quiet(1.5)]), block_s=0.02)
    assert [event.cause for event in stream.events_seen()] == ["level"]
    assert not any(state.changing(THRESHOLD) for state in stream.states)  # its masks are never held back


def test_change_detection_off_at_zero():
    stream = Stream(threshold=0.0)
    stream.play(np.concatenate([quiet(1.0), sound("hammer", 3.0, seed=1), sound("mug", 3.0, seed=2)]), 0.02)
    assert [event.cause for event in stream.events_seen()] == ["level"]


def test_non_finite_samples_end_the_event_and_refuse_the_audio_for_hold_s():
    stream = Stream()
    stream.play(np.concatenate([quiet(0.5), noise(1.0)]))
    assert stream.states[-1].event.id == 1
    bad = noise(0.01)
    bad[37] = np.nan
    (state,) = stream.play(bad)
    assert state.event is None and state.audio_error == "the audio contains NaN or infinite samples"
    after = stream.play(noise(1.5, seed=4))
    refused = [s.audio_error is not None for s in after]
    assert refused[:int(HOLD_S / 0.01) - 1] == [True] * (int(HOLD_S / 0.01) - 1) and not any(refused[101:])
    assert after[-1].event is not None and after[-1].event.id == 2  # a new event, its clip after the bad hop
    assert after[-1].event.clip_start > stream.buffer.written - int(1.5 * SAMPLE_RATE)


def test_audio_the_ring_lost_before_it_was_analysed_ends_the_event():
    stream = Stream(capacity_s=1.0)
    stream.play(np.concatenate([quiet(0.5), noise(0.5)]))
    assert stream.states[-1].event is not None
    stream.buffer.write(noise(2.0, seed=5), 0)  # more than the ring holds, never looked at
    state = stream.events.update(MIN_LEVEL_DB, HOLD_S, THRESHOLD)
    assert state.event is not None and state.event.id == 2  # the sound goes on, as a new event after the gap
    assert state.event.clip_start >= stream.buffer.written - stream.buffer.capacity  # audio the ring still holds
    clip = stream.events.clip(state.event, state.analysed, 2.0)
    assert np.array_equal(clip.samples, stream.buffer.read(clip.start, clip.end))


def test_a_new_buffer_ends_the_event():
    """The topic source swaps its buffer when AudioInfo changes the rate."""
    stream = Stream()
    stream.play(np.concatenate([quiet(0.5), noise(0.5)]))
    assert stream.states[-1].event.id == 1
    stream.buffer = RingBuffer(44100, 6.0)
    stream.buffer.write(quiet(0.3, 44100), 1)
    state = stream.events.update(MIN_LEVEL_DB, HOLD_S, THRESHOLD)
    assert state.event is None and state.sample_rate == 44100
    with pytest.raises(ValueError, match="audio source restarted"):  # the old event's audio was in the old ring
        stream.events.clip(stream.states[-1].event, stream.states[-1].analysed, 2.0)


def test_the_change_score_and_point_by_hand():
    rng = np.random.default_rng(0)
    old = rng.normal(0.0, 1.0, (200, 12))
    same, shifted = rng.normal(0.0, 1.0, (30, 12)), rng.normal(3.0, 1.0, (30, 12))
    mean, spread = old.mean(axis=0), old.std(axis=0)
    # the root mean square of the mean's shift over the coefficients, in units of spread + 0.5
    expected = np.sqrt(np.mean(((shifted.mean(axis=0) - mean) / (spread + 0.5)) ** 2))
    assert change_score(mean, spread, shifted) == pytest.approx(expected)
    assert change_score(mean, spread, same) < 0.3 < 1.5 < change_score(mean, spread, shifted)
    hops = np.concatenate([rng.normal(0.0, 1.0, (70, 12)), rng.normal(3.0, 1.0, (20, 12))])
    assert change_point(mean, spread, hops) == 70


# The rule on real sounds: AVAGD sample clips (44.1 kHz mp3), the README's figures measured on all of them --------

JOINS = [("drawer/open_or_close/smXUzVlDtFg_2.70_5.43.mp3", "bottle_cap/twist/P1FXGXxfcVw_2.23_4.44.mp3"),
         ("bottle_cap/twist/P1FXGXxfcVw_2.23_4.44.mp3", "hammer/hit/znAKEuv3SEw_0.54_12.42.mp3"),
         ("hammer/hit/ESyLQfFGp5c_34.66_41.71.mp3", "bottle_cap/twist/LkkjovEeeUw_395.43_408.64.mp3"),
         ("drawer/open_or_close/eMMzoe4yJBI_0.00_3.82.mp3", "hammer/hit/znAKEuv3SEw_0.54_12.42.mp3"),
         ("drawer/open_or_close/QWSFn2Ehazc_2.74_5.58.mp3", "switch/turn_on_or_off/2KAIxIHeaMw_1.81_2.45.mp3")]
CONTINUATIONS = ["bottle_cap/twist/P1FXGXxfcVw_2.23_4.44.mp3", "bottle_cap/twist/LkkjovEeeUw_395.43_408.64.mp3",
                 "bottle_cap/twist/27S6eK092rk_92.36_103.58.mp3", "drawer/open_or_close/smXUzVlDtFg_2.70_5.43.mp3",
                 "drawer/open_or_close/eMMzoe4yJBI_0.00_3.82.mp3", "drawer/open_or_close/QWSFn2Ehazc_2.74_5.58.mp3",
                 "hammer/hit/ESyLQfFGp5c_34.66_41.71.mp3", "hammer/hit/QFCLKdTGD-c_0.66_9.05.mp3"]


def real_clip(name: str) -> tuple[np.ndarray, int]:
    waveform, rate = load_audio(sample_dir() / name)
    return waveform.mean(axis=1), rate


@pytest.mark.parametrize("first, second", JOINS, ids=[f"{a.split('/')[0]}-{b.split('/')[0]}" for a, b in JOINS])
def test_two_real_sounds_of_different_categories_joined_are_two_events(first, second):
    (a, rate), (b, _) = real_clip(first), real_clip(second)
    a, b = a[:3 * rate], b[:3 * rate]
    stream = Stream(rate)
    stream.play(np.concatenate([a, b]), block_s=0.02)
    events = stream.events_seen()
    found = [e for e in events if e.cause == "change" and abs(e.onset - a.size) <= 0.2 * rate]
    assert found, [(e.onset / rate, e.cause) for e in events]
    assert not [e for e in events if e.cause == "change" and e.onset < a.size - 0.2 * rate]


@pytest.mark.parametrize("name", CONTINUATIONS, ids=[n.split("/")[-1][:11] for n in CONTINUATIONS])
def test_a_real_sound_going_on_is_no_change(name):
    clip, rate = real_clip(name)
    stream = Stream(rate)
    stream.play(clip, block_s=0.02)
    assert stream.events_seen() and not [e for e in stream.events_seen() if e.cause == "change"]
