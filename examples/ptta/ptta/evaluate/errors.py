"""Per-video errors in words, as per_video.csv, the page and the log show them.

PyAV raises FFmpeg's errors with FFmpeg's code as `errno` (1094995529 is AVERROR_INVALIDDATA, the
tag "INDA"); a message that carries only "[Errno 1094995529]" says nothing to a reader, so the
known codes are spelled out, and a file that is not a video says so.
"""

from __future__ import annotations

import re


def _tag(text: str) -> int:
    """FFmpeg's FFERRTAG(a, b, c, d) as PyAV reports it (positive: AVERROR is its negation)."""
    a, b, c, d = (ord(ch) for ch in text)
    return a | b << 8 | c << 16 | d << 24


# libavutil/error.h
FFMPEG_ERRORS = {
    _tag("INDA"): "invalid data found when processing input",
    _tag("\xf8DEC"): "decoder not found",
    _tag("\xf8DEM"): "demuxer not found",
    _tag("\xf8STR"): "stream not found",
    _tag("\xf8BSF"): "bitstream filter not found",
    _tag("EOF "): "end of file",
    _tag("PAWE"): "not yet implemented in FFmpeg",
    _tag("BUG!"): "internal bug in FFmpeg",
    _tag("UNKN"): "unknown error in FFmpeg",
    _tag("EXT "): "generic error in an external library",
}
HINTS = {_tag("INDA"): "not a video file, or a damaged one"}
_ERRNO = re.compile(r"\[Errno (-?\d+)\]\s*")


def _words(code: int) -> str | None:
    return FFMPEG_ERRORS.get(abs(code))


def describe_error(error: BaseException) -> str:
    """"Kind: what happened" for one failed video; FFmpeg's codes (through PyAV) in words."""
    kind = type(error).__name__
    code = getattr(error, "errno", None)
    if type(error).__module__.split(".")[0] == "av" and isinstance(code, int):
        words = _words(code)
        if words is not None:
            hint = HINTS.get(abs(code))
            return f"{kind}: cannot decode the video: {words}" + (f" ({hint})" if hint else "")
        words = str(getattr(error, "strerror", "") or "").strip() or f"error {code}"  # an OS error (errno)
        return f"{kind}: {words[:1].lower()}{words[1:]}"
    if isinstance(error, IndexError) and "tuple index out of range" in str(error):
        return f"{kind}: the file has no video stream"
    return f"{kind}: {spell_out(str(error))}"


def spell_out(text: str) -> str:
    """`text` with each "[Errno N]" of a known FFmpeg code replaced by its words."""

    def replace(match: re.Match) -> str:
        words = _words(int(match.group(1)))
        if words is None:
            return match.group(0)
        already = text[match.end():].lower().startswith(words)  # "[Errno N] Invalid data found ..."
        return "" if already else f"{words}: "

    return _ERRNO.sub(replace, text)
