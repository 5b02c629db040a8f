"""Encode selected clips on a background thread, so encoding overlaps decoding the rest of the video.

Re-encoding kept clips costs more than decoding them (libx264 at 720p takes several times a 720p
decode), so writing them in line would stall the decoder for every kept clip. PyAV releases the
GIL while libx264 encodes and while the decoder decodes, so a second thread runs them in parallel.

One clip is encoded at a time; handing over the next one first waits for the previous to finish.
That bounds memory to one clip's frames beyond the decode buffer, and a failed write is known
before the next clip starts: it marks its clip (`clip_path` None, `error` set) and raises
`ClipWriteError`, which fails the video, so a `--retry-failed` run curates it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from ptta.curate.clips import TIMESTAMP_TOLERANCE
from ptta.curate.frames import cover_crop
from ptta.video_io import write_decoded_video

# The encoder's threads, the same for every clip whatever the worker count or the machine: libx264
# (like most encoders) splits its work by thread count, so the bytes of a clip depend on it (44-54 dB
# apart), and a folder resumed with another --workers would mix clips encoded differently. Two
# threads are what FFmpeg chose on a 2-core machine; a single worker on a bigger one encodes slower
# than with FFmpeg's one thread per core, where --workers puts the cores to use instead.
ENCODER_THREADS = 2

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the package supports 3.10
    from typing_extensions import Self


class ClipWriteError(Exception):
    """A selected clip could not be written."""


def resample_times(start: float, end: float, fps: float) -> np.ndarray:
    """Output frame times start, start + 1/fps, ... before `end`."""
    count = max(1, int(np.floor((end - start + TIMESTAMP_TOLERANCE) * fps)))
    return start + np.arange(count) / fps


def output_frames(frames: list[tuple[float, av.VideoFrame]], times: np.ndarray, out_size: tuple[int, int] | None,
                  positions: Sequence[int] | None = None) -> list[av.VideoFrame]:
    """The frames a clip is made of: for each output time the source frame shown then, resized if asked.

    What is encoded into a written clip, and what `ptta cache` reads from the source for a clip
    that was not written (`clip_source.py`), so the two cannot disagree. `positions` (indices into
    `times`) returns only those frames, and resizes only those.
    """
    source_times = np.array([t for t, _ in frames])
    # For each output time, the latest source frame shown at that moment. Without the tolerance, a
    # Matroska frame stamped 0.042 s (really 1/24 s) would count as not yet shown at 1/24 s, and a
    # third of the frames of a 24 fps mkv would be dropped and the one before shown twice.
    picked = np.clip(np.searchsorted(source_times, times + TIMESTAMP_TOLERANCE, side="right") - 1, 0, len(frames) - 1)
    if positions is not None:
        picked = picked[np.asarray(positions, dtype=int)]
    if out_size is None:
        return [frames[k][1] for k in picked]
    resized = {k: cover_crop(frames[k][1], out_size) for k in set(picked.tolist())}
    return [resized[k] for k in picked.tolist()]


def encode_clip(out_dir: Path, clip_id: str, frames: list[tuple[float, av.VideoFrame]], times: np.ndarray,
                fps: float, out_size: tuple[int, int] | None, encoder: str, options: dict[str, str]) -> str:
    """Encode the frames shown at `times` (resampled to `fps`, resized if asked); return the relative path."""
    return write_clip(out_dir, clip_id, output_frames(frames, times, out_size), fps, encoder, options)


def write_clip(out_dir: Path, clip_id: str, chosen: list[av.VideoFrame], fps: float, encoder: str,
               options: dict[str, str]) -> str:
    """Encode a clip's frames (output_frames) to out_dir/clips/<clip_id>.mp4; return the relative path."""
    final = out_dir / "clips" / f"{clip_id}.mp4"
    partial = final.with_name(f"{clip_id}.partial.mp4")  # renamed only once complete
    try:
        write_decoded_video(partial, chosen, fps=fps, encoder=encoder, options=options, threads=ENCODER_THREADS)
    except BaseException:
        partial.unlink(missing_ok=True)  # a failed video's record stays, so no rerun would clean it
        raise
    partial.replace(final)
    return final.relative_to(out_dir).as_posix()


class BackgroundClipWriter:
    """`submit` clips of one video, then leave the `with` block (it waits for the last write).

    The frames handed over must no longer be used by the caller: the encoder re-times them.
    """

    def __init__(self, out_dir: Path, out_size: tuple[int, int] | None, encoder: str, options: dict[str, str]):
        self._out_dir = out_dir
        self._options = {"out_size": out_size, "encoder": encoder, "options": options}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clip-writer")
        self._in_flight: tuple[dict, Future] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.wait()
        except ClipWriteError:
            if exc_type is None:  # otherwise the clip is marked and the error already leaving wins
                raise
        finally:
            self._pool.shutdown()

    def submit(self, clip: dict, frames: list[tuple[float, av.VideoFrame]], times: np.ndarray, fps: float) -> None:
        """Start writing `clip` (its record; `clip_path` is already set) once the previous write is done."""
        self.wait()
        future = self._pool.submit(encode_clip, self._out_dir, clip["id"], frames, times, fps, **self._options)
        self._in_flight = (clip, future)

    def wait(self) -> None:
        """Block until the write in flight is done; raise ClipWriteError if it failed."""
        if self._in_flight is None:
            return
        clip, future = self._in_flight
        self._in_flight = None
        try:
            future.result()
        except Exception as error:  # any failure of the encoder is reported the same way
            reason = f"writing the clip failed: {type(error).__name__}: {error}"
            clip["clip_path"], clip["error"] = None, reason
            raise ClipWriteError(f"{clip['id']}: {reason}") from error
