"""Every knob of a curation run in one picklable dataclass (it travels to the worker processes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# The encoders --crf and --preset are options of; any other encoder takes --encoder-option only.
CRF_ENCODERS = ("libx264", "libx265")
DEFAULT_ENCODER = "libx264"

# Bumped when the code changes what a video's clips look like, so that a resumed run never mixes
# old and new clips. 2: rotation and mirroring applied, square pixels, explicit colour range,
# mkv/webm millisecond timestamps no longer drop frames.
CLIP_FORMAT_VERSION = 2


@dataclass(frozen=True)
class CurateSettings:
    # Clips (seconds): laid greedily inside each shot, never across a cut.
    min_clip_seconds: float = 3.0
    max_clip_seconds: float = 5.0
    # Shot detection: "content" / "adaptive" (PySceneDetect) or "transnetv2" (optional package).
    detector: str = "content"
    cut_threshold: float = 27.0  # ContentDetector threshold (adaptive: its adaptive_threshold is 3)
    # PySceneDetect's min_scene_len: a cut within this many frames of the previous one is dropped,
    # and a clip may then span it. 1 keeps every cut; shots too short for a clip yield none anyway.
    min_shot_frames: int = 1
    transnet_threshold: float = 0.5
    # Selection: S = alpha * flow + (1 - alpha) * aesthetic >= theta (paper: 0.7, 10).
    alpha: float = 0.7
    theta: float = 10.0
    min_flow: float | None = None
    max_flow: float | None = None
    min_aesthetic: float | None = None
    # Scorers.
    aesthetic: str = "proxy"  # "proxy" (no weights) or "laion"
    aesthetic_clip: str | None = None  # local CLIP ViT-L/14 directory (laion)
    aesthetic_head: str | None = None  # local MLP .pth / .safetensors file (laion)
    aesthetic_frames: int = 3
    device: str = "cpu"
    # Output clips. Without write_clips a clip is a frame range of its source (its manifest row
    # says which frames), read from there by `ptta cache`; a later run with write_clips writes the
    # clips still missing, the same as if written at once, so it is not a result-changing setting.
    write_clips: bool = False
    out_fps: float | None = None  # None keeps the source's nominal rate
    out_size: tuple[int, int] | None = None  # (width, height): scale to cover, then centre-crop
    # superfast at crf 20 matches veryfast at crf 18 in PSNR (45.7 against 45.6 dB on Big Buck
    # Bunny) for 1.5x less encoding CPU and 1.4x the bytes; encoding is most of a run's cost.
    crf: int = 20
    preset: str = "superfast"
    # Any FFmpeg video encoder (h264_nvenc moves the encoding off the CPU) and its own AVOptions.
    encoder: str = DEFAULT_ENCODER
    encoder_options: dict[str, str] = field(default_factory=dict)
    # Input limits.
    max_pixels: int = 4096 * 2160

    def __post_init__(self) -> None:
        if not 0 < self.min_clip_seconds <= self.max_clip_seconds:
            raise ValueError(
                f"--min-clip-seconds ({self.min_clip_seconds}) must be > 0 and <= --max-clip-seconds "
                f"({self.max_clip_seconds})"
            )
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if self.detector not in ("content", "adaptive", "transnetv2"):
            raise ValueError(f"--detector must be content, adaptive or transnetv2, got {self.detector!r}")
        if self.min_shot_frames < 1:
            raise ValueError(f"--min-shot-frames must be >= 1, got {self.min_shot_frames}")
        if self.aesthetic not in ("proxy", "laion"):
            raise ValueError(f"--aesthetic must be proxy or laion, got {self.aesthetic!r}")
        if self.aesthetic == "laion" and not (self.aesthetic_clip and self.aesthetic_head):
            raise ValueError("--aesthetic laion needs --aesthetic-clip DIR and --aesthetic-head FILE")
        if self.aesthetic_frames < 1:
            raise ValueError(f"--aesthetic-frames must be >= 1, got {self.aesthetic_frames}")
        if self.out_fps is not None and self.out_fps <= 0:
            raise ValueError(f"--fps must be > 0, got {self.out_fps}")
        if self.out_size is not None and (min(self.out_size) < 2 or any(side % 2 for side in self.out_size)):
            raise ValueError(f"--resize needs even sizes of at least 2 (H.264 yuv420p), got {self.out_size}")
        if not all(isinstance(k, str) and isinstance(v, str) and k for k, v in self.encoder_options.items()):
            raise ValueError(f"--encoder-option takes KEY=VALUE strings, got {self.encoder_options}")

    def encoder_open_options(self) -> dict[str, str]:
        """What the clip encoder is opened with: crf and preset for libx264/libx265, then --encoder-option."""
        rate_control = {"crf": str(self.crf), "preset": self.preset} if self.encoder in CRF_ENCODERS else {}
        return {**rate_control, **self.encoder_options}

    def results_fingerprint(self) -> dict:
        """The settings that change which clips a video yields and how they score and look.

        A resumed run must use the same ones, or finished videos would disagree with new ones.
        """
        chosen = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in ("device", "write_clips")}
        if self.encoder == DEFAULT_ENCODER and not self.encoder_options:
            # Left out at their defaults, so that folders begun before these settings existed resume.
            del chosen["encoder"], chosen["encoder_options"]
        return {**chosen, "clip_format_version": CLIP_FORMAT_VERSION}

    def to_dict(self) -> dict:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
