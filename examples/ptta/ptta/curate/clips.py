"""Lay clips inside shots while frames and cuts stream in.

Clips are laid greedily from the start of each shot: a clip closes when it reaches the maximum
length or when the shot ends; a shot's remainder shorter than the minimum is dropped. So a 12 s
shot with 3-5 s clips yields 5 + 5 s (the last 2 s are dropped), a 9 s shot 5 + 4 s, a 2.5 s shot
nothing, and no clip ever contains a cut.

Durations are measured on frame timestamps (a clip's end is the time of the frame after its last
one), so variable-frame-rate input is cut in true seconds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Seconds. Timestamps are rounded to the stream's time base (1 ms in Matroska, WebM and FLV), so
# the difference of two, a duration, can be off by up to 1 ms.
TIMESTAMP_TOLERANCE = 2e-3


@dataclass(frozen=True)
class ClipSpan:
    shot: int  # 0-based shot number within the video
    first: int  # index of the first frame
    last: int  # index of the last frame (inclusive)
    start: float  # time of the first frame (s)
    end: float  # time just after the last frame (s)

    @property
    def duration(self) -> float:
        return self.end - self.start


class ClipCutter:
    """Feed every frame's (index, time) and the detector's cuts; get back clips once final.

    A clip that closes at its maximum length is only final once the detector can no longer report
    a cut inside it, i.e. `lag_frames` frames later.
    """

    def __init__(self, frame_duration: float, min_seconds: float, max_seconds: float, lag_frames: int):
        self._frame_duration = frame_duration
        self._min = min_seconds
        self._max = max_seconds
        self._lag = lag_frames
        self._times: list[float] = []  # times of frames open_first, open_first + 1, ...
        self._open_first = 0  # first frame of the clip being laid
        self._shot = 0
        self._pending_cuts: list[int] = []
        self._cuts_applied: set[int] = set()  # a cut reported twice (detector and lost frames) counts once
        self._shot_start: float | None = None  # time of the current shot's first frame
        self._last_time: float | None = None
        # Lengths (s) of the shots ended so far; after finish(), of every shot. They say why a video
        # yields no clip (every shot shorter than the minimum).
        self.shot_seconds: list[float] = []

    @property
    def oldest_needed(self) -> int:
        """Frames with a smaller index can no longer be part of a clip."""
        return self._open_first

    def push(self, index: int, time: float, cuts: list[int]) -> list[ClipSpan]:
        if index != self._open_first + len(self._times):
            raise ValueError(f"frame indices must be consecutive: expected {self._open_first + len(self._times)}, got {index}")
        self._times.append(time)
        self._shot_start = time if self._shot_start is None else self._shot_start
        self._last_time = time
        self._pending_cuts = sorted({*self._pending_cuts, *cuts} - self._cuts_applied)
        return self._advance(confirmed=index - self._lag)

    def finish(self, cuts: list[int]) -> list[ClipSpan]:
        """The stream ended: close everything, including the last shot's remainder."""
        self._pending_cuts = sorted({*self._pending_cuts, *cuts} - self._cuts_applied)
        last = self._open_first + len(self._times) - 1
        clips = self._advance(confirmed=last)
        if self._times:
            end = self._times[-1] + self._frame_duration
            clips += self._close(last + 1, end)
        if self._last_time is not None:
            self._end_shot(self._last_time + self._frame_duration)
            self._last_time = None
        return clips

    def _end_shot(self, end: float) -> None:
        """The current shot ends at `end` (the time of the next shot's first frame)."""
        self.shot_seconds.append(round(end - self._shot_start, 6))
        self._shot_start = end

    def _time(self, index: int) -> float:
        return self._times[index - self._open_first]

    def _advance(self, confirmed: int) -> list[ClipSpan]:
        clips = []
        while self._times:
            # A cut at or before the clip's first frame (or a repeated one) only starts a new shot.
            while self._pending_cuts and self._pending_cuts[0] <= self._open_first:
                cut = self._pending_cuts.pop(0)
                self._cuts_applied.add(cut)
                if cut == self._open_first and self._open_first > 0:
                    self._end_shot(self._times[0])
                    self._shot += 1
            cut = self._pending_cuts[0] if self._pending_cuts else None
            full = self._max_length_end()
            if cut is not None and (full is None or cut <= full) and cut <= self._open_first + len(self._times) - 1:
                self._cuts_applied.add(self._pending_cuts.pop(0))
                self._end_shot(self._time(cut))
                clips += self._close(cut, self._time(cut))
                self._shot += 1
            elif full is not None and full <= confirmed:
                clips += self._close(full, self._time(full))
            else:
                break
        return clips

    def _max_length_end(self) -> int | None:
        """Index of the first frame past the maximum length, if it has arrived."""
        offset = bisect.bisect_left(self._times, self._times[0] + self._max - TIMESTAMP_TOLERANCE)
        return self._open_first + offset if offset < len(self._times) else None

    def _close(self, first_after: int, end: float) -> list[ClipSpan]:
        """Emit [open_first, first_after) if long enough, then start laying at first_after."""
        start = self._times[0]
        span = ClipSpan(self._shot, self._open_first, first_after - 1, start, end)
        del self._times[: first_after - self._open_first]
        self._open_first = first_after
        return [span] if span.duration >= self._min - TIMESTAMP_TOLERANCE else []
