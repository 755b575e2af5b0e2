"""Sound events: where a sound begins, where it ends or turns into another, and the clip of it that the model hears.

The stream in a RingBuffer is analysed in 10 ms hops from the last hop analysed on, whenever the node looks (each
frame, each diagnostics tick, each action feedback), so that nothing depends on when it looks. Per hop: the RMS
level of the 50 ms ending there, and the spectral envelope of the 25 ms ending there (VGGish's 64 log-mel bands
at the stream's own rate, as cepstral coefficients 1 to 12: the shape of the spectrum without its level).

- An event begins where the 50 ms level reaches `min_level_db` after quiet. Its onset is the start of that 50 ms;
  its clip begins PRE_ROLL_S earlier, since the level crosses after the attack has begun.
- It lasts while the level reached `min_level_db` within `hold_s`, and ends `hold_s` after it last did.
- A change of sound ends it and begins the next at once, with no quiet between: when the envelope of the last
  CHANGE_RECENT_S of sound lies `change_threshold` or further from the event's before them (`change_score`). The new
  event's onset and clip start at the estimated change point (`change_point`), without pre-roll: before it lies
  the old sound.
- A non-finite sample ends the event it falls in, and the audio is refused until `hold_s` passes without one.

The clip of an event (`clip_span`) holds its audio only: while under one log-mel window, what there is (the front
end zero-pads it to 1 s, as training pads short clips); then the last whole 0.96 s windows that fit in `window_s`,
on a grid anchored at the clip's start, so that the clip moves on once per window.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from avag_core.audio import (EXAMPLE_OVERHANG_S, EXAMPLE_SECONDS, LOG_OFFSET, MEL_BANDS, STFT_WINDOW,
                             mel_filterbank)

from .ring_buffer import RingBuffer

SILENCE_DB = -120.0  # the level of digital silence, and the floor of every level
HOP_S = 0.01
LEVEL_HOPS = 5  # the level is the RMS of the last 50 ms
SPECTRUM_S = 0.025  # VGGish's analysis frame
CEPSTRA = 12  # coefficients 1..12: the envelope; coefficient 0, the level, is left out
PRE_ROLL_S = 0.05
CHANGE_RECENT_S = 0.3  # the span of sound judged new or not against the event before it
MIN_RECENT_HOPS = 10  # sounding hops in that span: fewer is too little sound to judge
MIN_REFERENCE_HOPS = 50  # sounding hops of the event before them: a sound is judged against at least 0.5 s of it
CHANGE_SUSPECT = 0.7  # of audio.change_threshold: above the demo's steady sounds (mug 0.62, hammer 0.38)
# How long a suspicion holds masks back: a change is found 0.1-0.2 s after it, so a score that stays past the
# suspect level longer is a varied sound's, not a change on its way
CHANGE_SUSPECT_MAX_S = 0.3
SPREAD_FLOOR = 0.5  # cepstral units: a coefficient that barely varies within a sound must not make any change vast
CHANGE_SEARCH_S = 1.0  # how far back the change point is looked for
AUDIO_ERROR = "the audio contains NaN or infinite samples"


@dataclass(frozen=True)
class SoundEvent:
    """One sound, by sample index of the stream (counted from its first sample) and on the node's clock."""
    id: int
    onset: int  # where the sound begins
    clip_start: int  # where its clip begins: the onset less the pre-roll, or the change point
    onset_ns: int
    cause: str  # "level": after quiet; "change": straight after another sound


@dataclass(frozen=True)
class EventState:
    """The stream after one update."""
    level_db: float  # the loudest 50 ms RMS over hold_s, in dBFS
    event: SoundEvent | None  # the current event; None between events
    analysed: int  # the stream's samples analysed so far
    sample_rate: int
    audio_error: str | None = None  # why the audio is refused: a non-finite sample within hold_s
    ended: SoundEvent | None = None  # the last event that ended
    ended_at: int = 0  # where its audio ends: after its last sounding hop, at the change, or where it broke off
    change_score: float = 0.0  # the current event's latest change_score (0 until it can be judged)
    suspect_s: float = 0.0  # how long the change score has stayed past CHANGE_SUSPECT of the threshold

    def changing(self, threshold: float) -> bool:
        """Whether the current event's sound may be turning into another: its change score is past CHANGE_SUSPECT
        of the threshold, since less than CHANGE_SUSPECT_MAX_S. Its masks are held back meanwhile: a change is
        found some 0.1-0.2 s after it, and a mask grounded on the old sound then would show the old object after
        the new sound began."""
        return (threshold > 0 and self.change_score >= CHANGE_SUSPECT * threshold
                and self.suspect_s < CHANGE_SUSPECT_MAX_S)

    def ready(self, min_heard_s: float, threshold: float) -> bool:
        """Whether the current event may be grounded now: it holds `min_heard_s` of audio and is not changing."""
        return self.event is not None and self.heard_s >= min_heard_s and not self.changing(threshold)

    @property
    def heard_s(self) -> float:
        """The current event's audio from its onset on; 0 without one."""
        return 0.0 if self.event is None else (self.analysed - self.event.onset) / self.sample_rate


@dataclass(frozen=True)
class EventClip:
    """What a grounding is made from: samples [start, end) of the stream, with the times of the first and last and
    of the event's onset, all three from one block's stamp so that they keep their samples' distances."""
    samples: np.ndarray
    sample_rate: int
    start: int
    end: int
    start_ns: int
    end_ns: int
    onset_ns: int


def clip_span(clip_start: int, end: int, window_s: float, sample_rate: int) -> tuple[int, int]:
    """The samples [start, end) of an event's clip once the stream reached `end`.

    Under one whole window (0.96 s and the 15 ms its analysis reads past it), all of it. Then the last whole
    windows on the grid from `clip_start` that fit in `window_s` (two at 2.0 s, twenty at 19.2), and the last
    one's overhang; with `window_s` under one window, the last `window_s` from `clip_start` on."""
    grid = int(round(EXAMPLE_SECONDS * sample_rate))
    overhang = math.ceil(EXAMPLE_OVERHANG_S * sample_rate - 1e-6)
    fitting = int(round(window_s * sample_rate)) // grid
    if fitting == 0:
        return max(clip_start, end - int(round(window_s * sample_rate))), end
    whole = (end - clip_start - overhang) // grid
    if whole < 1:
        return clip_start, end
    last = clip_start + whole * grid
    return last - min(whole, fitting) * grid, last + overhang


class HopAnalysis:
    """Level and spectral envelope per 10 ms hop of a stream at one rate."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.hop = max(1, int(round(HOP_S * sample_rate)))
        self.frame = max(self.hop, int(round(SPECTRUM_S * sample_rate)))
        self.lookback = self.frame - self.hop  # the samples before a hop that its spectrum reads
        self._fft_size = 1 << (self.frame - 1).bit_length()
        self._window = np.hanning(self.frame + 1)[:-1]  # periodic, as the front end's
        self._mel = mel_filterbank(sample_rate, self._fft_size).double().numpy()
        self._scale = STFT_WINDOW / self.frame  # magnitudes as the 16 kHz front end would see them
        bands = np.arange(MEL_BANDS)
        self._cepstra = (np.sqrt(2 / MEL_BANDS)
                         * np.cos(np.pi * np.arange(1, CEPSTRA + 1)[:, None] * (2 * bands + 1) / (2 * MEL_BANDS)))

    def mean_squares(self, samples: np.ndarray) -> np.ndarray:
        """Whole hops of samples -> the mean square of each."""
        hops = samples.size // self.hop
        return np.mean(samples[:hops * self.hop].astype(np.float64).reshape(hops, self.hop) ** 2, axis=1)

    def envelopes(self, samples: np.ndarray) -> np.ndarray:
        """`lookback` samples, then whole hops -> [hops, CEPSTRA]: cepstral coefficients 1..12 of each hop's log-mel."""
        hops = (samples.size - self.lookback) // self.hop
        frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), self.frame)[::self.hop][:hops]
        magnitude = np.abs(np.fft.rfft(frames * self._window, n=self._fft_size)) * self._scale
        return np.log(magnitude @ self._mel + LOG_OFFSET) @ self._cepstra.T


def level_db(mean_square: float) -> float:
    return max(SILENCE_DB, 10 * math.log10(mean_square)) if mean_square > 0 else SILENCE_DB


def loudest_level_db(samples: np.ndarray, sample_rate: int) -> float:
    """The loudest 50 ms RMS of a clip in dBFS, by the stream's rule (the 50 ms ending at each hop); a clip under
    50 ms is one frame."""
    analysis = HopAnalysis(sample_rate)
    energy = analysis.mean_squares(samples)
    if energy.size < LEVEL_HOPS:
        return level_db(float(np.mean(samples.astype(np.float64) ** 2))) if samples.size else SILENCE_DB
    return level_db(float(np.convolve(energy, np.ones(LEVEL_HOPS) / LEVEL_HOPS, "valid").max()))


def change_score(mean: np.ndarray, spread: np.ndarray, recent: np.ndarray) -> float:
    """How far the recent envelopes [n, 12] lie from a sound whose envelopes have this mean and spread: the root
    mean square over coefficients of the difference of the means, each in units of the sound's own spread there
    (plus SPREAD_FLOOR), so that what varies within a sound counts for less."""
    return float(np.sqrt(np.mean(((recent.mean(axis=0) - mean) / (spread + SPREAD_FLOOR)) ** 2)))


def change_point(mean: np.ndarray, spread: np.ndarray, hops: np.ndarray) -> int:
    """Where in `hops` [n, 12] (the old sound's, then the new sound's, in order) the new sound begins, given the old
    sound's mean and spread: each hop's distance from the old sound is taken against the middle between the
    typical distance of the first half of the hops (the old sound's) and of the last MIN_RECENT_HOPS (the new
    one's), and the new sound begins where the sum over the hops from there to the end is largest (a cumulative-
    sum change point)."""
    distance = np.sqrt(np.mean(((hops - mean) / (spread + SPREAD_FLOOR)) ** 2, axis=1))
    old = np.median(distance[:max(1, distance.size // 2)])
    middle = (old + np.median(distance[-MIN_RECENT_HOPS:])) / 2
    from_here_on = np.cumsum((distance - middle)[::-1])[::-1]
    return int(np.argmax(from_here_on))


class SoundEvents:
    """The events of one audio source's stream. `buffer` gives the source's current RingBuffer (the topic source
    swaps it when the sample rate changes, which ends the event); `ids` numbers the events. Thread-safe: the
    inference loop, diagnostics and the action server all update it."""

    def __init__(self, buffer: Callable[[], RingBuffer], ids: Iterator[int]) -> None:
        self._buffer_of, self._ids = buffer, ids
        self._lock = threading.Lock()
        self._restart(buffer())  # the analysis begins with what is written from now on

    def update(self, min_level_db: float, hold_s: float, change_threshold: float) -> EventState:
        """Analyses what the stream brought since the last update; `change_threshold` 0: no change detection."""
        with self._lock:
            buffer = self._buffer_of()
            if buffer is not self._buffer:
                self._restart(buffer)
            analysis = self._analysis
            oldest = buffer.written - buffer.capacity + analysis.lookback
            if oldest > self._position:  # the ring moved past audio never analysed: the gap ends any event
                self._end(self._position)
                self._energies.clear()
                self._position = self._since = oldest + -(oldest - self._position) % analysis.hop  # on the grid
            hops = (buffer.written - self._position) // analysis.hop
            if hops > 0:
                first = self._position - analysis.lookback  # before the stream's first sample: silence
                samples = buffer.read(max(0, first), self._position + hops * analysis.hop)
                self._analyse(np.concatenate((np.zeros(max(0, -first), np.float32), samples)), min_level_db,
                              hold_s, change_threshold)
            hold_hops = max(1, int(round(hold_s / HOP_S)))
            recent_levels = list(self._levels)[-hold_hops:]
            return EventState(max(recent_levels, default=SILENCE_DB), self._event, self._position, buffer.sample_rate,
                              AUDIO_ERROR if self._hop - self._nonfinite_hop < hold_hops else None, *self._ended,
                              self._score if self._event is not None else 0.0,
                              (self._hop - self._suspect_since) * HOP_S
                              if self._event is not None and self._suspect_since is not None else 0.0)

    def clip(self, event: SoundEvent, end: int, window_s: float) -> EventClip:
        """`event`'s clip once the stream reached `end` (clip_span): the current event's up to what a state
        analysed, an ended one's up to where it ended. Raises ValueError when the ring no longer holds it."""
        with self._lock:
            buffer = self._buffer
            if event.id < self._first_id:
                raise ValueError("the sound event's audio is gone: the audio source restarted since")
        start, end = clip_span(event.clip_start, end, window_s, buffer.sample_rate)
        return EventClip(buffer.read(start, end), buffer.sample_rate, start, end,
                         *buffer.stamps_of(start, end - 1, event.onset))

    # analysis ------------------------------------------------------------------------------------------------
    def _restart(self, buffer: RingBuffer) -> None:
        self._buffer = buffer
        self._analysis = HopAnalysis(buffer.sample_rate)
        self._position = buffer.written  # the next hop's first sample: hops from where the analysis began
        self._since = buffer.written  # the first sample analysed without a gap: no clip reaches back before it
        self._hop = 0  # hops analysed
        self._energies: deque[float] = deque(maxlen=LEVEL_HOPS)
        self._levels: deque[float] = deque(maxlen=int(round(30.0 / HOP_S)))  # audio.hold_s's largest
        self._nonfinite_hop = -math.inf
        self._event: SoundEvent | None = None
        self._ended: tuple[SoundEvent | None, int] = (None, 0)
        self._first_id = math.inf  # the first event of this buffer: earlier ones' audio is not in it

    def _analyse(self, samples: np.ndarray, min_level_db: float, hold_s: float, change_threshold: float) -> None:
        analysis = self._analysis
        hold_hops = max(1, int(round(hold_s / HOP_S)))
        finite = np.isfinite(samples)
        clean = np.where(finite, samples, 0.0)
        energies = analysis.mean_squares(clean[analysis.lookback:])
        envelopes = analysis.envelopes(clean)
        for index, (energy, envelope) in enumerate(zip(energies, envelopes)):
            start = self._position + index * analysis.hop
            self._hop += 1
            span = slice(analysis.lookback + index * analysis.hop, analysis.lookback + (index + 1) * analysis.hop)
            if not finite[span].all():
                self._nonfinite_hop = self._hop
                self._end(start)
                self._energies.clear()
                self._since = start + analysis.hop  # no clip reaches back to it
                continue
            self._energies.append(float(energy))
            if len(self._energies) < LEVEL_HOPS:
                continue
            level = level_db(sum(self._energies) / LEVEL_HOPS)
            self._levels.append(level)
            sounding = level >= min_level_db
            if self._event is None:
                if not sounding or self._hop - self._nonfinite_hop < hold_hops:
                    continue
                onset = start + analysis.hop - LEVEL_HOPS * analysis.hop
                self._begin(onset, max(self._since, onset - int(round(PRE_ROLL_S * analysis.sample_rate))), "level")
            if sounding:
                self._last_sounding, self._last_sounding_end = self._hop, start + analysis.hop
                # the envelope counts where this hop itself sounds: the 50 ms level lags a sound's end
                if level_db(energy) >= min_level_db:
                    self._record(self._hop, start, envelope)
                    if change_threshold > 0:
                        self._look_for_change(change_threshold)
            elif self._hop - self._last_sounding >= hold_hops:
                self._end(self._last_sounding_end)
        self._position += energies.size * analysis.hop

    def _end(self, at: int) -> None:
        if self._event is not None:
            self._ended = (self._event, at)
            self._event = None

    def _begin(self, onset: int, clip_start: int, cause: str) -> None:
        self._end(onset)
        self._event = SoundEvent(next(self._ids), onset, clip_start, self._buffer.stamp_of(onset), cause)
        self._first_id = min(self._first_id, self._event.id)
        # the event's sounding hops: the reference (older than the recent span) as sums, the rest one by one
        self._recent: deque[tuple[int, int, np.ndarray]] = deque()  # (hop, first sample, envelope)
        self._searchable: deque[tuple[int, int, np.ndarray]] = deque()  # referenced, within CHANGE_SEARCH_S
        self._reference_sum = np.zeros(CEPSTRA)
        self._reference_sum_sq = np.zeros(CEPSTRA)
        self._reference_count = 0
        self._score = 0.0
        self._suspect_since: int | None = None  # the hop since which the score has stayed past CHANGE_SUSPECT

    def _record(self, hop: int, start: int, envelope: np.ndarray) -> None:
        """Adds a sounding hop of the event; the hops older than the recent span move into the reference."""
        self._recent.append((hop, start, envelope))
        recent_hops = int(round(CHANGE_RECENT_S / HOP_S))
        while self._recent[0][0] <= hop - recent_hops:
            old = self._recent.popleft()
            self._reference_sum += old[2]
            self._reference_sum_sq += old[2] ** 2
            self._reference_count += 1
            self._searchable.append(old)
        search_hops = int(round(CHANGE_SEARCH_S / HOP_S))
        while self._searchable and self._searchable[0][0] <= hop - search_hops:
            self._searchable.popleft()

    def _look_for_change(self, threshold: float) -> None:
        if self._reference_count < MIN_REFERENCE_HOPS or len(self._recent) < MIN_RECENT_HOPS:
            return
        mean = self._reference_sum / self._reference_count
        spread = np.sqrt(np.maximum(self._reference_sum_sq / self._reference_count - mean ** 2, 0.0))
        self._score = change_score(mean, spread, np.stack([envelope for _, _, envelope in self._recent]))
        if self._score < CHANGE_SUSPECT * threshold:
            self._suspect_since = None
        elif self._suspect_since is None:
            self._suspect_since = self._hop
        if self._score < threshold:
            return
        hops = list(self._searchable) + list(self._recent)
        new_sound = hops[change_point(mean, spread, np.stack([envelope for _, _, envelope in hops])):]
        first_sample = new_sound[0][1]
        self._begin(first_sample, first_sample, "change")
        for hop, start, envelope in new_sound:  # the new sound's hops so far, as if it had begun there
            self._record(hop, start, envelope)
