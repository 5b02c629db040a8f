"""Let a curation worker reuse the memory of the frames it freed, instead of faulting it in anew.

A worker holds up to a clip's worth of decoded frames at once (the clip being decided, the
decoder's read-ahead and the timestamp look-ahead: about 130 frames, 400 MB at 1080p). Those frames
live in FFmpeg's frame pool, which belongs to one video's decoder and is freed when that video
ends. With glibc's defaults, blocks of a frame's size are mmapped and unmapped one by one and the
top of the heap is trimmed, so every new video touches its whole pool afresh: on the 2-core VM,
about 100,000 page faults and 0.3 s of kernel time for each 13 s 1080p video, a fifth of the
curation's wall time (docs/benchmarks.md, Curation). Raising glibc's mmap and trim thresholds and
its top pad keeps freed blocks in the process, where the next video's pool finds them (under 3,000
faults). The worker's resident memory then stays near its peak between videos; it reaches that
peak again on the next video anyway (590 MB either way over the 1080p synthetic set).
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Frames below this come from the heap: 4K yuv420p frames are 12 MiB. glibc's ceiling is 32 MiB.
MMAP_THRESHOLD_BYTES = 32 << 20
# Freed memory at the top of the heap up to this is kept rather than returned.
TRIM_THRESHOLD_BYTES = 1 << 30
# Each time the heap grows, it grows by this much more than asked (untouched pages cost nothing).
TOP_PAD_BYTES = 256 << 20


# Once a process: platform.libc_ver() reads the interpreter's binary, and each VideoCurator calls this.
@functools.cache
def keep_freed_frame_memory() -> bool:
    """Tune glibc's malloc for this process as the module docstring says; whether it could (False
    on other C libraries, which this leaves as they are)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))  # fmt: skip
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
