"""An advisory lock on an output folder, so that two runs never write into one folder at once.

Two `ptta curate` runs into one --out write the same clips/<id>.partial.mp4 files and corrupt each
other's clips; any stage that writes a folder has the same problem. `output_lock` takes
`fcntl.flock` on a hidden file in the folder (`.ptta.lock`). The kernel releases such a lock when
its holder ends in any way (kill -9, the out-of-memory killer, a crash), so a killed run never
leaves the folder locked, and a second run is refused at once rather than waiting. The lock file
says who holds it (command, PID, host, start time), and the refusal repeats that. Lock files are
left in place: deleting one while another process opens it would let two runs hold different
files of the same name.

Runs that write disjoint parts of one folder (shards of `ptta curate`) each lock a `part`: they
share the folder's lock and hold their part's own (`.ptta-<part>.lock`), so two runs of one part
exclude each other, different parts run side by side, and a run locking the whole folder excludes
every part (and is excluded by any).

flock excludes processes on one machine; on NFS, Linux clients pass it to the server as a
byte-range lock, so runs on different hosts exclude each other too (unless the share is mounted
with local_lock). The lock is advisory: it stops only programs that take it too.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

LOCK_FILE = ".ptta.lock"
_PART_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def empty_folder(folder: str | Path) -> None:
    """Delete everything in `folder` but its lock files (a run rebuilding a folder it holds:
    removing the held lock file would let a second run lock a new file of the same name)."""
    for entry in Path(folder).iterdir():
        if _is_lock_file(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _is_lock_file(entry: Path) -> bool:
    return entry.name.startswith(".ptta") and entry.name.endswith(".lock")


class OutputFolderInUse(RuntimeError):
    """Another run holds the output folder (or the same part of it); the message says which."""


@contextmanager
def output_lock(folder: str | Path, command: str, part: str | None = None) -> Iterator[Path]:
    """Hold `folder` (created if missing) for the `with` block; yield it as a Path.

    `command` describes the holder to whoever is refused, e.g. "ptta curate" or "ptta curate
    --shard-index 1 --num-shards 4". With `part` (letters, digits, `_.-`, e.g. "shard-1-of-4"),
    only that part of the folder is held (see the module docstring). Raises OutputFolderInUse,
    naming the folder and the holder, when the folder or that part is held already. A folder this
    call created and the run left empty (it failed before writing anything) is removed again.

        with output_lock(out_dir, command="ptta curate"):
            ...  # nothing else that takes this lock writes into out_dir meanwhile
    """
    folder = Path(folder)
    if part is not None and not _PART_NAME.fullmatch(part):
        raise ValueError(f"output_lock part {part!r}: use only letters, digits and _.-")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / LOCK_FILE
    with ExitStack() as held:
        if part is None:
            held.enter_context(_held(whole, command, exclusive=True, what=str(folder),
                                     holders=lambda: _holders_of_whole(folder)))
            # No part can be held now: descriptions left by killed part holders are stale.
            for part_file in _part_files(folder):
                _clear_description(part_file)
        else:
            held.enter_context(_held(whole, command, exclusive=False, what=str(folder),
                                     holders=lambda: _description(whole)))
            part_file = folder / f".ptta-{part}.lock"
            held.enter_context(_held(part_file, command, exclusive=True, what=f"{folder} ({part})",
                                     holders=lambda: _description(part_file)))
        try:
            yield folder
        finally:
            # removed while still held, so no second run can be holding a lock file in it
            if created and part is None and all(_is_lock_file(entry) for entry in folder.iterdir()):
                shutil.rmtree(folder)


@contextmanager
def _held(path: Path, command: str, exclusive: bool, what: str, holders: Callable[[], str]) -> Iterator[None]:
    """flock `path`; an exclusive holder writes its description into the file and clears it at the
    end. A refusal names `what` is locked and `holders()`."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # mode as the umask allows, like any output
    try:
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputFolderInUse(f"{what} is in use by {holders() or 'another process'}; wait for it to "
                                    "finish or choose another output folder") from None
        if exclusive:
            _write_description(descriptor, f"{command} (PID {os.getpid()} on {socket.gethostname()}, "
                                           f"since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        try:
            yield
        finally:
            if exclusive:
                _write_description(descriptor, "")  # the kernel drops the lock itself when the file closes
    finally:
        os.close(descriptor)


def _write_description(descriptor: int, text: str) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, text.encode(), 0)


def _description(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""


def _clear_description(path: Path) -> None:
    with open(path, "r+b") as file:
        file.truncate()


def _part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".ptta-*.lock"))


def _holders_of_whole(folder: Path) -> str:
    """Who holds the folder: the part holders if any (they hold the whole folder's lock shared and
    write only their part's file), else the one exclusive holder."""
    parts = [text for text in map(_description, _part_files(folder)) if text]
    return "; ".join(parts) or _description(folder / LOCK_FILE)
