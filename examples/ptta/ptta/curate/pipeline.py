"""Run curation over many videos: sharding, resumption, parallel workers that survive crashes."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ptta.curate.probe import shard_of, video_id
from ptta.curate.records import is_finished, video_record, write_video_record
from ptta.curate.settings import CurateSettings
from ptta.tables import write_text_atomic

SETTINGS_FILE = "settings.json"

_worker_curator = None  # one VideoCurator per worker process, built once by _start_worker
_worker_start_error: str | None = None  # why building it failed (reported per task, see below)


def check_settings(out_dir: Path, settings: CurateSettings) -> None:
    """Refuse to resume into a folder made with different result-changing settings."""
    path = out_dir / SETTINGS_FILE
    wanted = settings.results_fingerprint()
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        if changed:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
            raise ValueError(f"--out {out_dir} holds results made with other settings ({details}); "
                             "use a new --out folder or the same settings")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(wanted, indent=1))


def check_shard(num_shards: int, shard_index: int) -> None:
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must lie in [0, --num-shards={num_shards}), got {shard_index}")


def videos_to_curate(videos: list[Path], out_dir: Path, num_shards: int, shard_index: int,
                     retry_failed: bool) -> tuple[list[Path], list[Path]]:
    """(this shard's videos, those of them still to do)."""
    check_shard(num_shards, shard_index)
    mine = [v for v in videos if shard_of(v, num_shards) == shard_index]
    return mine, [v for v in mine if not is_finished(out_dir, v, video_id(v), retry_failed)]


def _start_worker(settings: CurateSettings, out_dir: Path, threads: int | None) -> None:
    global _worker_curator, _worker_start_error
    import cv2

    from ptta.curate.aesthetic import make_aesthetic_scorer
    from ptta.curate.video_task import VideoCurator

    if threads is not None:
        cv2.setNumThreads(threads)  # several workers share the cores
    try:
        _worker_curator = VideoCurator(settings, out_dir, make_aesthetic_scorer(settings), codec_threads=threads or 0)
    except Exception as error:  # noqa: BLE001 - an initializer that raises only says "pool broken"
        _worker_start_error = f"{type(error).__name__}: {error}"


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores for OpenCV, the decoder and the encoder. Each would
    otherwise start about one thread per core: with one worker per core, cores x cores threads
    and as many decoder frame buffers, which for 4K video is gigabytes per worker."""
    return max(1, usable_cores() // workers)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (taskset, a cluster job's allocation), not
    the whole host's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _curate_in_worker(path: Path) -> dict:
    if _worker_start_error is not None:
        raise RuntimeError(f"a curation worker could not start: {_worker_start_error}")
    return _worker_curator.run(path)


def curate_videos(todo: list[Path], out_dir: Path, settings: CurateSettings, workers: int,
                  on_done: Callable[[dict], None]) -> None:
    """Curate every video in `todo`; each record is written under out_dir/videos as it finishes.

    With workers > 1 each video runs in a worker process. If a process dies (a decoder crash, the
    out-of-memory killer), the videos that were in flight are retried one per fresh process, so
    the culprit is found and recorded as failed while the others finish.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        _start_worker(settings, out_dir, None)
        if _worker_start_error is not None:
            raise RuntimeError(_worker_start_error)
        for path in todo:
            on_done(_curate_in_worker(path))
        return
    unfinished = _run_pool(todo, out_dir, settings, workers, on_done)
    for path in unfinished:
        if _run_pool([path], out_dir, settings, 1, on_done):
            record = video_record(path, video_id(path), None, [], "the worker process died while curating this video "
                                  "(decoder crash or out of memory)", [], 0, 0.0)
            write_video_record(out_dir, record)
            on_done(record)


def _run_pool(todo: list[Path], out_dir: Path, settings: CurateSettings, workers: int,
              on_done: Callable[[dict], None]) -> list[Path]:
    """Run `todo` on a pool; return the videos left unfinished because the pool broke."""
    context = multiprocessing.get_context("spawn")  # torch and decoder threads do not survive fork
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(settings, out_dir, threads_per_worker(workers))) as pool:
        pending = {pool.submit(_curate_in_worker, path): path for path in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                break
            for future in done:
                on_done(future.result())  # any other exception is a set-up error: stop the run
                del pending[future]
    # The pool broke: keep what finished, hand back the rest.
    unfinished = []
    for future, path in pending.items():
        if future.done() and future.exception() is None:
            on_done(future.result())
        else:
            unfinished.append(path)
    return unfinished
