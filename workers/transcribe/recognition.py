"""What a recognizer answers for one speech chunk, and the chunk's audio both ways: the pieces
every transcribe backend shares (``workers.transcribe.whisper``, ``workers.transcribe.sphinx``).

Here, not in ``workers.transcribe.backend``, so that the backends do not import the module
whose factory imports them (``tests/unit/test_import_layers.py``); ``backend`` re-exports
them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schemas.speech import SPEECH_SAMPLE_RATE
from workers.runtime.errors import PermanentError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

INVALID_AUDIO = "invalid_audio"  # PermanentError reason: the chunk's bytes are not audio we can decode


@dataclass(frozen=True)
class RelativeText:
    """A timed stretch of a transcript, in seconds from the chunk's start."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Recognized:
    text: str
    language: str | None
    latency_s: float
    segments: list[RelativeText] = field(default_factory=list)
    words: list[RelativeText] = field(default_factory=list)


def decode_speech(flac: bytes) -> npt.NDArray[np.float32]:
    """A speech chunk's samples: float32 in [-1, 1], 16 kHz mono (resampled and downmixed if
    the bytes say otherwise). Raises PermanentError(INVALID_AUDIO) for bytes that are not
    audio (not a container FFmpeg reads, no audio stream, or a stream that does not decode).
    CPU-bound: call it off the event loop."""
    import av
    import numpy as np

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEECH_SAMPLE_RATE)
    parts: list[npt.NDArray[Any]] = []
    try:
        with av.open(io.BytesIO(flac), mode="r") as container:
            if not container.streams.audio:
                raise PermanentError(INVALID_AUDIO, "the speech chunk has no audio stream")
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except PermanentError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as exc:  # garbage, truncated or unsupported bytes
        raise PermanentError(INVALID_AUDIO, f"the speech chunk is not readable audio: {exc}") from exc
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def encode_speech(samples: npt.NDArray[np.float32], sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """FLAC bytes of mono float samples as a speech chunk carries them: resampled to 16 kHz,
    16-bit. The inverse of ``decode_speech`` (up to 16-bit rounding)."""
    import av
    import numpy as np
    from av.audio.stream import AudioStream

    out = io.BytesIO()
    with av.open(out, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SPEECH_SAMPLE_RATE)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SPEECH_SAMPLE_RATE)
        frames = []
        if samples.size:  # no samples: a FLAC with no audio frames (FFmpeg refuses an empty frame)
            block = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frames = [*resampler.resample(frame), *resampler.resample(None)]
        for converted in frames:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return out.getvalue()
