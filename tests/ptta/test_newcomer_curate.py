"""`ptta curate` as a new user meets it (issue #17, curation items 5-7): the end of a run says which
videos yielded no clip and why, and that selected clips lack captions and how to add them; the
report shows a table of videos, the clips beside their captions, and 'no clips' rather than empty
plots."""

from __future__ import annotations

import pytest

from ptta.curate.clips import ClipCutter


@pytest.mark.parametrize("seconds, cuts_s, expected", [
    (12.0, [], [12.0]),
    (12.0, [2.5, 9.0], [2.5, 6.5, 3.0]),
    (13.0, [5.0], [5.0, 8.0]),  # the cut falls on a full clip's end
    (2.9, [], [2.875]),  # 69 frames at 24 fps
])  # fmt: skip
def test_the_clip_cutter_measures_every_shot(seconds, cuts_s, expected):
    fps, delay = 24, 3
    cuts = [int(c * fps) for c in cuts_s]
    cutter = ClipCutter(1 / fps, 3.0, 5.0, lag_frames=16)
    for index in range(int(seconds * fps)):
        cutter.push(index, index / fps, [c for c in cuts if c + delay == index])
    cutter.finish([c for c in cuts if c + delay >= int(seconds * fps)])
    assert cutter.shot_seconds == pytest.approx(expected)
