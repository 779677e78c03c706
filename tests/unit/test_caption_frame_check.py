"""Caption frames are checked before the engine: anything but a JPEG of its declared size
within the pixel budget is a permanent ``invalid_frame`` error, and the backend never sees it.

Every adversarial frame is made here, from a small Pillow image; nothing binary is committed.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
import structlog
from PIL import Image, ImageFile
from redis.asyncio import Redis

from schemas.segments import Frame, SegmentBatch
from workers.caption.backend import CaptionResult
from workers.caption.frame_check import check_frames, frame_problem
from workers.caption.prompt import ChatMessages
from workers.caption.stage import CaptionStage
from workers.runtime.errors import PermanentError
from workers.runtime.stage import RecordContext
from workers.settings import CaptionSettings, DecodeSettings

W, H = 96, 64
BUDGET = CaptionSettings().caption_max_frame_pixels


def _image_bytes(fmt: str, size: tuple[int, int] = (W, H)) -> bytes:
    noise = random.Random(0).randbytes(size[0] * size[1] * 3)  # noisy: a JPEG with real entropy data
    out = io.BytesIO()
    Image.frombytes("RGB", size, noise).save(out, format=fmt)
    return out.getvalue()


def _jpeg() -> bytes:
    return _image_bytes("JPEG")


def _with_sof_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0) claiming another size: a decompression bomb
    when the claim is huge. SOF0 = FF C0, length (2), precision (1), height (2), width (2)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


def _frame(data: bytes, width: int = W, height: int = H, index: int = 0) -> Frame:
    return Frame(index=index, pts_s=float(index), width=width, height=height, jpeg=data)


def _segment(*frames: Frame) -> SegmentBatch:
    return SegmentBatch(
        object_id="obj",
        segment_id="seg",
        segment_index=0,
        source_uri="s3://media/clip.mp4",
        media_kind="video",
        start_s=0.0,
        end_s=2.0,
        reason="end",
        frames=list(frames),
    )


BAD_FRAMES: dict[str, Callable[[], Frame]] = {
    "png_bytes": lambda: _frame(_image_bytes("PNG")),
    "gif_bytes": lambda: _frame(_image_bytes("GIF")),
    "random_bytes": lambda: _frame(random.Random(1).randbytes(4000)),
    "empty_bytes": lambda: _frame(b""),
    "truncated_jpeg": lambda: _frame(_jpeg()[: len(_jpeg()) // 2]),
    "jpeg_header_only": lambda: _frame(_jpeg()[: _jpeg().index(b"\xff\xda")]),
    "declared_size_mismatch": lambda: _frame(_jpeg(), width=W, height=W),
    "header_bomb_60000x60000": lambda: _frame(_with_sof_size(_jpeg(), 60000, 60000)),
    "header_8000x8000_under_pillow_limit": lambda: _frame(_with_sof_size(_jpeg(), 8000, 8000)),
    "declared_and_header_over_budget": lambda: _frame(_with_sof_size(_jpeg(), 2000, 2000), 2000, 2000),
}


def test_a_sound_jpeg_passes() -> None:
    assert frame_problem(_frame(_jpeg()), BUDGET) is None
    check_frames(_segment(_frame(_jpeg()), _frame(_jpeg(), index=1)), BUDGET)


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
def test_a_bad_frame_is_a_permanent_invalid_frame_error(kind: str) -> None:
    segment = _segment(_frame(_jpeg()), BAD_FRAMES[kind]().model_copy(update={"index": 1, "pts_s": 1.0}))
    with pytest.raises(PermanentError) as info:
        check_frames(segment, BUDGET)
    assert info.value.reason == "invalid_frame"
    assert (info.value.object_id, info.value.segment_id) == ("obj", "seg")
    assert str(info.value).startswith("frame 1 (index 1, 1.000s): "), str(info.value)


def test_a_header_beyond_the_budget_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> object:
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    for kind in ("header_bomb_60000x60000", "header_8000x8000_under_pillow_limit", "declared_and_header_over_budget"):
        assert frame_problem(BAD_FRAMES[kind](), BUDGET) is not None
    assert decoded == []
    # A sound frame is decoded once (at 1/8 scale: every coded block is read, little else).
    assert frame_problem(_frame(_jpeg()), BUDGET) is None and len(decoded) == 1
    assert decoded[0][0] * 8 >= W and decoded[0][0] < W


def test_the_budget_admits_every_frame_the_decoder_makes() -> None:
    assert DecodeSettings().max_pixels <= CaptionSettings().caption_max_frame_pixels


class RecordingBackend:
    name = "vllm"
    model = "fake-vl"

    def __init__(self) -> None:
        self.calls: list[ChatMessages] = []

    async def start(self) -> None: ...

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        self.calls.append(messages)
        return CaptionResult(text="a caption", prompt_tokens=1, completion_tokens=1, latency_s=0.0)

    async def close(self) -> None: ...


class NothingCaptioned:
    """Stands in for the Redis progress store: no segment is captioned yet."""

    async def is_marked(self, stage: str, segment_id: str) -> bool:
        return False


def _stage() -> tuple[CaptionStage, RecordingBackend]:
    backend = RecordingBackend()
    stage = CaptionStage(CaptionSettings(), Redis(), backend)  # Redis() connects lazily: never here
    stage.progress = NothingCaptioned()  # type: ignore[assignment]
    return stage, backend


def _ctx() -> RecordContext:
    return RecordContext(
        topic="media.segments", partition=0, offset=0, key="obj", value=b"", attempt=1, log=structlog.get_logger()
    )


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_the_stage_rejects_a_bad_frame_before_the_backend(kind: str) -> None:
    stage, backend = _stage()
    with pytest.raises(PermanentError) as info:
        async for _ in stage.process(_segment(_frame(_jpeg()), BAD_FRAMES[kind]()), _ctx()):
            pass
    assert info.value.reason == "invalid_frame"
    assert backend.calls == []


async def test_the_stage_captions_sound_frames() -> None:
    stage, backend = _stage()
    outputs = [out async for out in stage.process(_segment(_frame(_jpeg()), _frame(_jpeg(), index=1)), _ctx())]
    assert len(outputs) == 1 and len(backend.calls) == 1
