"""Run curation over many videos: sharding, resumption, parallel workers that survive crashes."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
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


# prctl(2) option: the signal a process gets when its parent ends.
_PR_SET_PDEATHSIG = 1
# How often a worker without prctl (not Linux) checks that the run that started it still exists.
_PARENT_POLL_SECONDS = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the run that started it ends.

    A run killed outright (kill -9, the out-of-memory killer) cannot stop its workers; they would
    go on curating into the output folder for hours, beside any rerun, and keep the
    multiprocessing resource tracker alive too (it exits when the last of them closes its pipe).
    On Linux the kernel sends SIGKILL when the parent ends; elsewhere a thread polls the parent.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(_PARENT_POLL_SECONDS)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # it ended before the signal was asked for
        os._exit(1)


@contextmanager
def _started_processes_ignore_sigint() -> Iterator[None]:
    """Processes started inside the block begin with SIGINT ignored (the disposition is inherited).

    Ctrl-C signals the terminal's whole process group: the workers would each print a
    KeyboardInterrupt traceback (or die while the run still counts on them). Only the run reacts;
    it stops its workers itself (see _run_pool). A Ctrl-C within the block itself, which only
    starts processes, is lost.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_worker(settings: CurateSettings, out_dir: Path, threads: int | None, parent_pid: int | None = None) -> None:
    """Set up this process's VideoCurator; `parent_pid` is given in worker processes (see _die_with_parent)."""
    global _worker_curator, _worker_start_error
    import cv2

    if parent_pid is not None:
        _die_with_parent(parent_pid)

    from ptta.curate.aesthetic import make_aesthetic_scorer
    from ptta.curate.video_task import VideoCurator

    if threads is not None:
        cv2.setNumThreads(threads)  # several workers share the cores
    try:
        _worker_curator = VideoCurator(settings, out_dir, make_aesthetic_scorer(settings), codec_threads=threads or 0)
    except Exception as error:  # noqa: BLE001 - an initializer that raises only says "pool broken"
        _worker_start_error = f"{type(error).__name__}: {error}"


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores for OpenCV and the decoder (the encoder's threads are fixed:
    clip_writer.ENCODER_THREADS). Each would otherwise start about one thread per core: with one
    worker per core, cores x cores threads and as many decoder frame buffers, which for 4K video is
    gigabytes per worker."""
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
                             initargs=(settings, out_dir, threads_per_worker(workers), os.getpid())) as pool:
        try:
            with _started_processes_ignore_sigint():  # submit starts the workers
                pending = {pool.submit(_curate_in_worker, path): path for path in todo}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                    break
                for future in done:
                    on_done(future.result())  # any other exception is a set-up error: stop the run
                    del pending[future]
        except BaseException:  # Ctrl-C, a set-up error
            _stop_now(pool)
            raise
    # The pool broke: keep what finished, hand back the rest.
    unfinished = []
    for future, path in pending.items():
        if future.done() and future.exception() is None:
            on_done(future.result())
        else:
            unfinished.append(path)
    return unfinished


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Drop the queued videos and kill the workers: leaving the pool's `with` block would first
    curate every video queued. The videos in flight have no record yet, so a rerun redoes them."""
    workers = list(pool._processes.values())  # no public handle on them before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.kill()
