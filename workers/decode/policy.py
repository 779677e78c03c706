"""`SegmentPolicy`: the settings every part of the decode core reads.

Its own module, importing none of the others, so that container.py (limits), sampling.py
(windows), documents.py (page budget) and segmenter.py (feed mode) can all import it: defined
next to the generator that wires those parts together, it made each of them import its caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

SegmentMode = Literal["scene", "fixed", "keyframe"]
SEGMENT_MODES: Final[tuple[str, ...]] = get_args(SegmentMode)

_MIN_SEGMENT_BYTES: Final = 4096  # a 32x32 JPEG at the lowest quality step is ~0.9 kB


@dataclass(frozen=True)
class SpeechPolicy:
    """How the audio track becomes speech chunks (speech.py): voice-activity detection on
    16 kHz mono, chunks cut at pauses, each at most `max_chunk_s` and `max_chunk_bytes` of FLAC."""

    vad_threshold: float = 0.5  # silero-vad speech probability of a 32 ms window
    min_silence_s: float = 0.5  # a pause this long ends a stretch of speech
    max_chunk_s: float = 30.0  # Whisper's window
    max_chunk_bytes: int = 900_000  # FLAC bytes per chunk, under the broker's message limit

    def __post_init__(self) -> None:
        if not (0 < self.vad_threshold < 1 and self.min_silence_s >= 0 and 1 < self.max_chunk_s <= 30):
            raise ValueError(f"invalid SpeechPolicy ({self!r})")
        if self.max_chunk_bytes < 64 * 1024:
            raise ValueError(f"SpeechPolicy.max_chunk_bytes must be >= 64 KiB ({self!r})")


@dataclass(frozen=True)
class SegmentPolicy:
    """How media is cut into segments and how each segment's frames are sampled and encoded.

    `mode`: "scene" looks at every frame for hard cuts (plus `max_segment_s` windows); "fixed"
    cuts windows only and decodes just the GOPs that hold a sampled frame; "keyframe" decodes
    keyframes only (windows, frames sampled among keyframes), for long media.
    """

    mode: SegmentMode = "scene"
    max_segment_s: float = 10.0  # fixed window when no cut happens
    min_scene_s: float = 1.0  # no cut closer than this to the segment start
    scene_threshold: float = 0.35  # luma-histogram distance that counts as a cut; 0 disables cuts
    sample_fps: float = 1.0  # frames chosen per second of segment
    min_frames: int = 1  # per segment, by sampling between grid points when it is short
    max_frames: int = 8  # per segment (uniformly thinned if more)
    max_pixels: int = 448 * 448  # per frame after resize; sides multiples of 32, aspect kept
    jpeg_quality: int = 85
    max_segment_bytes: int = 900_000  # total JPEG bytes per segment
    max_duration_s: float = 4 * 3600
    max_source_pixels: int = 8192 * 8192
    decode_threads: int = 0  # FFmpeg decoder threads per media; 0 lets FFmpeg choose
    # Decode budget per object (see budget.py); 0 disables a limit.
    max_decode_s: float = 1800.0  # wall clock
    max_decode_pixel_rate: float = 1e9  # decoded pixels per second of media (4K60 is ~5e8)
    max_pixels_per_byte: float = 1e6  # decoded pixels per compressed byte
    page_max_pixels: int = 1920 * 1080  # per document page, rendered or decoded (see documents.py)
    max_pages: int = 1000  # documents with more pages are refused
    # Visual tokens a segment's frames may cost Qwen3-VL as one video; 0 = no budget
    # (sampling.py: segment_window_s, frame_pixels).
    visual_token_budget: int = 0
    speech: SpeechPolicy | None = None  # extract speech chunks from the audio track; None: ignore audio

    @property
    def detects_cuts(self) -> bool:
        return self.mode == "scene" and self.scene_threshold > 0.0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("max_segment_s", self.max_segment_s > 0),
                ("min_scene_s", self.min_scene_s >= 0),
                ("scene_threshold", 0.0 <= self.scene_threshold <= 1.0),
                ("sample_fps", self.sample_fps > 0),
                ("mode", self.mode in SEGMENT_MODES),
                ("min_frames", 1 <= self.min_frames <= self.max_frames),
                ("max_frames", self.max_frames >= 1),
                ("max_pixels", self.max_pixels >= 32 * 32),
                ("jpeg_quality", 1 <= self.jpeg_quality <= 100),
                ("max_segment_bytes", self.max_segment_bytes >= _MIN_SEGMENT_BYTES),
                ("max_duration_s", self.max_duration_s > 0),
                ("max_source_pixels", self.max_source_pixels > 0),
                ("decode_threads", self.decode_threads >= 0),
                ("max_decode_s", self.max_decode_s >= 0),
                ("max_decode_pixel_rate", self.max_decode_pixel_rate >= 0),
                ("max_pixels_per_byte", self.max_pixels_per_byte >= 0),
                ("page_max_pixels", self.page_max_pixels >= 32 * 32),
                ("max_pages", self.max_pages >= 1),
                ("visual_token_budget", self.visual_token_budget >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid SegmentPolicy field(s): {', '.join(problems)} ({self!r})")
