"""Score every video with every scorer, one scorer at a time, skipping what the store already holds.

Scorer by scorer (not video by video) so that only one judge model sits in GPU memory at a time,
and a scorer whose results are all stored is never loaded. A video that cannot be decoded, or a
scorer that fails on it, is recorded as an error and the loop goes on; a scorer that cannot load
records that error for each of its pending videos and the next scorer runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptta.evaluate.errors import describe_error
from ptta.evaluate.protocol import VideoRecord
from ptta.evaluate.scorers.base import DecodedVideo, Scorer, ScorerError
from ptta.evaluate.store import ScoreStore, file_digest
from ptta.video_io import read_video


@dataclass
class RunCounts:
    reused: int = 0
    scored: int = 0
    failed: int = 0


def _error_text(error: BaseException) -> str:
    return describe_error(error)


def decode(record: VideoRecord) -> DecodedVideo:
    if not record.video.is_file():
        raise FileNotFoundError(f"{record.video}: no such video file")
    frames, fps = read_video(record.video)
    return DecodedVideo(record.video, frames, fps)


def file_keys(records: list[VideoRecord], store: ScoreStore) -> dict[Path, str]:
    """Each video's store key (its content digest), computed once per run."""
    return {r.video: store.file_key(r.video, file_digest(r.video)) for r in records}


def _quiet_loading_bars() -> None:
    """No "Loading weights" bars from transformers (our own log says what is loading)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _load(scorer: Scorer, log: Callable[[str], None]) -> str | None:
    """Load the scorer's weights; the error message if that fails."""
    try:
        _quiet_loading_bars()
        scorer.load()
    except Exception as error:  # noqa: BLE001 - recorded per video, the other scorers still run
        message = f"loading {scorer.name} failed: {_error_text(error)}"
        log(message)
        return message
    return None


def score_all(records: list[VideoRecord], scorers: list[Scorer], store: ScoreStore,
              log: Callable[[str], None] = print, keys: dict[Path, str] | None = None) -> RunCounts:
    """Score what the store lacks; `keys` (from `file_keys`) saves hashing every video again."""
    keys = file_keys(records, store) if keys is None else keys
    counts = RunCounts()
    for scorer in scorers:
        pending = [r for r in records if not store.has_success(keys[r.video], scorer.signature)]
        counts.reused += len(records) - len(pending)
        if not pending:
            log(f"{scorer.name}: all {len(records)} videos already scored")
            continue
        log(f"{scorer.name}: scoring {len(pending)} of {len(records)} videos")
        # The weights load at the first video that decodes: a rerun whose only pending videos are
        # broken files never loads the model.
        loaded, load_error = False, None
        try:
            for index, record in enumerate(pending, 1):
                start = time.perf_counter()
                try:
                    if load_error is not None:
                        raise ScorerError(load_error)
                    video = decode(record)
                    if not loaded:
                        load_error = _load(scorer, log)
                        if load_error is not None:
                            raise ScorerError(load_error)
                        loaded = True
                    result = scorer.checked_score(video, record.prompt)
                except Exception as error:  # noqa: BLE001 - one bad video must not stop the run
                    message = load_error or _error_text(error)
                    store.add(record.video, keys[record.video], scorer.name, scorer.signature, error=message,
                              seconds=time.perf_counter() - start)
                    counts.failed += 1
                    if load_error is None:
                        log(f"  [{index}/{len(pending)}] {record.video}: {message}")
                    continue
                store.add(record.video, keys[record.video], scorer.name, scorer.signature, values=result.values,
                          details=result.details, seconds=time.perf_counter() - start)
                counts.scored += 1
        finally:
            if loaded:
                scorer.close()
    return counts
