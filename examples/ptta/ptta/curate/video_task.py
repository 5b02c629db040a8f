"""Curate one video in one decode pass: shots -> clips -> scores -> selection -> kept clips written.

Frames are decoded on a thread up to DECODE_AHEAD_FRAMES ahead. Decoded frames wait in a buffer
only until their clip is decided, and a kept clip's frames until the background writer has encoded
them, so memory is bounded by two clips plus the shot detector's lag and the frames decoded ahead
(about max_clip_seconds x fps x width x height x 1.5 bytes per clip for yuv420p video: ~370 MB
for 5 s of 1080p at 24 fps), whatever the video's length.
"""

from __future__ import annotations

import time as clock
from collections import deque
from contextlib import closing
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ptta.curate.aesthetic import AestheticScorer
from ptta.curate.clip_writer import BackgroundClipWriter, ClipWriteError, resample_times
from ptta.curate.clips import TIMESTAMP_TOLERANCE, ClipCutter, ClipSpan
from ptta.curate.flow import FlowTracker
from ptta.curate.frame_memory import keep_freed_frame_memory
from ptta.curate.probe import InputError, VideoInfo, video_id
from ptta.curate.records import OUTPUT_FOLDERS, clip_record, video_id_of_output, video_record, write_video_record
from ptta.curate.settings import CurateSettings
from ptta.curate.shots import make_shot_detector
from ptta.curate.read_ahead import read_ahead
from ptta.curate.source import CurationSource

THUMBNAIL_WIDTH = 160
# A video that decodes to less than this share of its stated duration is reported as truncated.
TRUNCATION_RATIO = 0.9
# A frame rate below this comes from broken timestamps, not from a video.
MIN_PLAUSIBLE_FPS = 1.0
# Frames the decoder thread may run ahead of shot detection and scoring.
DECODE_AHEAD_FRAMES = 8


def select(flow: float | None, aesthetic: float, settings: CurateSettings) -> tuple[float | None, bool, str | None]:
    """(S, selected, reason for rejection) by the paper's rule plus the optional hard limits."""
    if flow is None:
        return None, False, "no flow measurement inside the clip"
    score = settings.alpha * flow + (1 - settings.alpha) * aesthetic
    if settings.min_flow is not None and flow < settings.min_flow:
        return score, False, f"flow {flow:.2f} < --min-flow {settings.min_flow}"
    if settings.max_flow is not None and flow > settings.max_flow:
        return score, False, f"flow {flow:.2f} > --max-flow {settings.max_flow}"
    if settings.min_aesthetic is not None and aesthetic < settings.min_aesthetic:
        return score, False, f"aesthetic {aesthetic:.2f} < --min-aesthetic {settings.min_aesthetic}"
    if score < settings.theta:
        return score, False, f"S {score:.2f} < theta {settings.theta}"
    return score, True, None


def whole_video_error(info: VideoInfo, frames_decoded: int, seconds: float) -> str | None:
    """Why a video whose frames were all read still counts as failed, if it does."""
    if frames_decoded == 0:
        return "no decodable video frames"
    if frames_decoded == 1 and (info.frames or 0) <= 1:  # a PNG or JPEG named .mp4 opens as a one-frame video
        return "a single frame (a still image?), not a video"
    if frames_decoded == 1 and info.fps < MIN_PLAUSIBLE_FPS:
        # Corrupt timing (an mp4 whose timescale is 0, or one sample lasting hours) makes even
        # FFmpeg stop after the first frame; the frame rate derived from it gives it away.
        return (f"timestamps unusable (frame rate read as {info.fps:.3g} fps): 1 of the {info.frames} frames "
                "the header states decoded")
    if info.duration and seconds < TRUNCATION_RATIO * info.duration - 0.5:
        return f"truncated: decoded {seconds:.2f} s of the {info.duration:.2f} s the header states"
    return None


class VideoCurator:
    """Holds one worker's scorer and the output folder; `run(path)` curates a video."""

    def __init__(self, settings: CurateSettings, out_dir: Path, scorer: AestheticScorer, codec_threads: int = 0):
        """`codec_threads` caps the decoder's threads (0: FFmpeg's choice, about one per core; workers
        sharing a machine each take their share). The encoder's are fixed (clip_writer.ENCODER_THREADS)."""
        self.settings = settings
        self.out_dir = out_dir
        self.scorer = scorer
        self.codec_threads = codec_threads
        # Each video would otherwise fault its frame pool in afresh (frame_memory.py).
        keep_freed_frame_memory()

    def run(self, path: str | Path) -> dict:
        """Curate `path`, write its record under out/videos/, and return it. Never raises for bad input."""
        path = Path(path)
        vid = video_id(path)
        began = clock.perf_counter()
        self._remove_partial_outputs(vid)
        clips: list[dict] = []
        warnings: list[str] = []
        shots: list[float] = []  # shot lengths (s)
        info, error, frames_decoded = None, None, 0
        try:
            with CurationSource(path, self.settings.max_pixels, warnings, self.codec_threads) as source:
                info = source.info
                writer = BackgroundClipWriter(self.out_dir, self.settings.out_size, self.settings.encoder,
                                              self.settings.encoder_open_options())
                with writer:
                    frames_decoded, seconds = self._decode_and_cut(path, vid, source, clips, warnings, writer, shots)
            error = whole_video_error(info, frames_decoded, seconds)
        except InputError as reason:
            error = str(reason)
        except ClipWriteError as reason:
            error = str(reason)
        except av.error.FFmpegError as reason:
            error = f"decoding failed after {len(clips)} clips: {reason}"
        except Exception as reason:  # noqa: BLE001 - one broken video must not stop the run
            error = f"{type(reason).__name__} while curating: {reason}"
        record = video_record(path, vid, info, clips, error, warnings, frames_decoded, clock.perf_counter() - began)
        # Why a video yields no clip (every shot shorter than --min-clip-seconds), for the report.
        record.update(shots=len(shots), longest_shot_seconds=max(shots, default=None))
        write_video_record(self.out_dir, record)
        return record

    def _remove_partial_outputs(self, vid: str) -> None:
        """A video without a record was in flight when a run died: drop what it left behind, and
        only that (`{vid}-*` alone also matches the files of an input whose id begins with vid)."""
        for folder in OUTPUT_FOLDERS:
            for stale in (self.out_dir / folder).glob(f"{vid}-*"):
                if video_id_of_output(stale.name) == vid:
                    stale.unlink()

    def _decode_and_cut(self, path: Path, vid: str, source: CurationSource, clips: list[dict], warnings: list[str],
                        writer: BackgroundClipWriter, shots: list[float]) -> tuple[int, float]:
        """Returns (frames decoded, seconds decoded); clips and warnings are appended as found, shot
        lengths at the end."""
        info = source.info
        detector = make_shot_detector(self.settings, info.fps)
        cutter = ClipCutter(1.0 / info.fps, self.settings.min_clip_seconds, self.settings.max_clip_seconds,
                            detector.lag_frames)
        flow = FlowTracker(info.width, info.height, info.fps)
        buffer: deque[tuple[int, float, av.VideoFrame]] = deque()
        index, first_time, previous_time = 0, None, None
        shortest, longest = np.inf, 0.0  # frame intervals, to notice variable frame rate
        # The decoder thread must stop before the source closes, also when this loop raises.
        with closing(read_ahead(source.frames(), DECODE_AHEAD_FRAMES, name=f"decode {vid}")) as decoded:
            for time, frame, after_lost_frames in decoded:
                if previous_time is not None and not after_lost_frames:
                    shortest, longest = min(shortest, time - previous_time), max(longest, time - previous_time)
                previous_time = time
                first_time = time if first_time is None else first_time
                sampled = flow.push(time, frame)
                buffer.append((index, time, frame))
                cuts = detector.push(index, frame)
                if after_lost_frames and index > 0:
                    cuts.append(index)  # the picture jumps over the lost frames like a cut
                for span in cutter.push(index, time, cuts):
                    clips.append(self._finish_clip(vid, len(clips), path, info, span, buffer, flow, writer))
                while buffer and buffer[0][0] < cutter.oldest_needed:
                    buffer.popleft()
                if buffer:
                    flow.forget_before(buffer[0][1])
                    # The open stretch is long enough to become a clip: measure its flow now.
                    if sampled and time - buffer[0][1] >= self.settings.min_clip_seconds - TIMESTAMP_TOLERANCE:
                        flow.measure_from(buffer[0][1])
                index += 1
        if index == 0:  # whole_video_error reports it
            return 0, 0.0
        for span in cutter.finish(detector.finish()):
            clips.append(self._finish_clip(vid, len(clips), path, info, span, buffer, flow, writer))
        shots.extend(cutter.shot_seconds)
        if longest - shortest > 0.5 / info.fps:
            warnings.append(
                f"variable frame rate (frame intervals {shortest * 1000:.1f}-{longest * 1000:.1f} ms): "
                "clips are cut on timestamps and written at a constant rate"
            )
        return index, previous_time - first_time + 1.0 / info.fps

    def _finish_clip(self, vid: str, number: int, path: Path, info, span: ClipSpan, buffer, flow: FlowTracker,
                     writer: BackgroundClipWriter) -> dict:
        """Score a closed clip, save its thumbnail, hand it to the writer if selected; return its record."""
        settings = self.settings
        frames = [(t, f) for i, t, f in buffer if span.first <= i <= span.last]
        clip_id = f"{vid}-{number:04d}"
        # The centres of `aesthetic_frames` equal parts of the clip.
        picks = [frames[int((k + 0.5) * len(frames) / settings.aesthetic_frames)][1] for k in range(settings.aesthetic_frames)]
        aesthetic = float(np.mean(self.scorer.score([f.to_ndarray(format="rgb24") for f in picks])))
        flow_score = flow.score(span.start, frames[-1][0])
        score, selected, reason = select(flow_score, aesthetic, settings)
        thumbnail = self._write_thumbnail(clip_id, frames[len(frames) // 2][1])

        out_fps = settings.out_fps or info.fps
        times = resample_times(span.start, span.end, out_fps)
        size = settings.out_size or (info.width, info.height)
        written = selected and settings.write_clips  # otherwise the clip is its frame range in the source
        clip_path = f"clips/{clip_id}.mp4" if written else None  # what encode_clip writes
        record = clip_record(clip_id, vid, path, span, len(times), out_fps, size, flow_score, aesthetic, score,
                             selected, reason, clip_path, thumbnail)
        if written:
            writer.submit(record, frames, times, out_fps)
        return record

    def _write_thumbnail(self, clip_id: str, frame: av.VideoFrame) -> str:
        height = max(2, round(frame.height * THUMBNAIL_WIDTH / frame.width))
        path = self.out_dir / "thumbs" / f"{clip_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame.reformat(width=THUMBNAIL_WIDTH, height=height, format="rgb24").to_ndarray()).save(path)
        return path.relative_to(self.out_dir).as_posix()
