"""Small, real media built on the fly: photo montages (silent or spoken), clips, stills, broken
and audio-only files.

The benchmarks and the tests both feed the pipeline this media, so it lives with the
benchmarks: they run on the main dependencies alone (the tests may import loadtest, loadtest
never imports the tests). The photographs are scikit-image's sample pictures (public domain or
CC0, see ``skimage.data``), kept as JPEGs in ``data/photos`` (long side at most 640 px);
video is encoded with PyAV (libx264 when the wheel has it, else mpeg4). Speech is Debian's
``espeak-ng`` (a child process) saying a sentence (``spoken``), muxed as AAC under a montage
(``make_montage_video(..., speech=...)``); ``tests/speech_media.py`` has the tests' richer set.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream
from PIL import Image

RGB = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.float32]

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050  # espeak-ng writes 22.05 kHz mono s16
AUDIO_RATE = 44100  # the montage's AAC track
_VOICE_FLOOR = 1e-3  # |sample| above this counts as voice when trimming espeak's own silence

PHOTOS_DIR = Path(__file__).parent / "data" / "photos"
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "hubble_deep_field", "page")


def photo(name: str) -> RGB:
    """The photograph ``name`` (one of PHOTO_NAMES) as an RGB uint8 array."""
    with Image.open(PHOTOS_DIR / f"{name}.jpg") as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


def photos(n: int = 4) -> list[RGB]:
    """The first `n` photographs of PHOTO_NAMES."""
    return [photo(name) for name in PHOTO_NAMES[:n]]


def resized(image: RGB, size: tuple[int, int]) -> RGB:
    """`image` scaled (not cropped) to `size` = (width, height)."""
    return np.asarray(Image.fromarray(image).convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _pan(canvas: RGB, size: tuple[int, int], progress: float) -> RGB:
    """A `size` window sliding diagonally over `canvas` as `progress` goes 0 -> 1 (camera motion)."""
    width, height = size
    x = round((canvas.shape[1] - width) * progress)
    y = round((canvas.shape[0] - height) * progress)
    return canvas[y : y + height, x : x + width]


@dataclass(frozen=True)
class Speech:
    """Voice for a montage's audio track: ``samples`` (mono float32 at ``rate``) from ``at_s`` on."""

    samples: Samples
    rate: int
    at_s: float

    @property
    def seconds(self) -> float:
        return self.samples.size / self.rate


def spoken(sentence: str, *, words_per_minute: int = 160, pitch: int = 50, rate: int = AUDIO_RATE) -> Samples:
    """``sentence`` said by espeak-ng (``pitch`` 0-99), float32 mono at ``rate``, its leading and
    trailing silence trimmed (so where the voice is, is known)."""
    wav = subprocess.run(
        [ESPEAK, "--stdout", "-s", str(words_per_minute), "-p", str(pitch), sentence],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    with av.open(BytesIO(wav), mode="r") as container:
        said = np.concatenate([f.to_ndarray().astype(np.float32).reshape(-1) for f in container.decode(audio=0)])
    said /= 32768.0
    voiced = np.flatnonzero(np.abs(said) > _VOICE_FLOOR)
    said = said[voiced[0] : voiced[-1] + 1] if voiced.size else said
    return said if rate == ESPEAK_RATE else resampled(said, ESPEAK_RATE, rate)


def resampled(samples: Samples, rate_in: int, rate_out: int) -> Samples:
    """Linear interpolation: enough for synthetic speech (the pipeline resamples with FFmpeg)."""
    positions = np.arange(int(samples.size * rate_out / rate_in), dtype=np.float64) * rate_in / rate_out
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def _audio_stream(container: av.container.OutputContainer, speech: Speech) -> AudioStream:
    """The AAC stream for ``speech``: added before anything is muxed (the header lists it)."""
    stream = container.add_stream("aac", rate=speech.rate)
    assert isinstance(stream, AudioStream)
    stream.layout = "mono"
    return stream


def _mux_speech(
    container: av.container.OutputContainer, stream: AudioStream, speech: Speech, duration_s: float
) -> None:
    """An AAC track of ``duration_s``: silence, ``speech`` from its ``at_s``, silence (cut at the end)."""
    total = int(duration_s * speech.rate)
    track = np.zeros(total, dtype=np.float32)
    at = min(int(speech.at_s * speech.rate), total)
    voice = speech.samples[: total - at]
    track[at : at + voice.size] = voice
    accepted = stream.codec_context.codec.audio_formats or []
    resampler = av.AudioResampler(format=accepted[0].name if accepted else "fltp", layout="mono", rate=speech.rate)
    for start in range(0, total, 4096):
        frame = av.AudioFrame.from_ndarray(track[None, start : start + 4096], format="flt", layout="mono")
        frame.sample_rate, frame.pts = speech.rate, start
        for converted in resampler.resample(frame):
            container.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        container.mux(stream.encode(converted))
    container.mux(stream.encode(None))


def make_montage_video(
    path: str | Path,
    images: Sequence[RGB],
    seconds_each: float,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    *,
    rotation: int = 0,
    pan: bool = True,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    keyint: int | None = None,
    frame_durations: Sequence[int] | None = None,
    first_pts: int = 0,
    container_options: dict[str, str] | None = None,
    speech: Speech | None = None,
) -> list[float]:
    """Encode the images back to back, each shown `seconds_each` (slowly panning); return the cut times.

    A cut time is the presentation time of the first frame of each image after the first.
    `rotation` (degrees counter-clockwise) is written as display-matrix metadata. `codec`,
    `pix_fmt` and `options` (merged over the libx264 defaults) select odd encodings; `keyint`
    fixes the keyframe interval in frames. `frame_durations` (in 1/(fps*10) s ticks, cycled)
    makes the frame rate variable; `first_pts` (same ticks) shifts every timestamp (muxers
    shift negative ones back unless `container_options` has ``avoid_negative_ts=disabled``).
    `speech` adds an AAC track as long as the video with that voice in it.
    """
    width, height = size
    ticks = 10 if frame_durations else 1  # finer time base so durations can vary
    margin = (math.ceil(width * 1.15), math.ceil(height * 1.15)) if pan else size
    cuts: list[float] = []
    index = 0
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec or video_codec(), rate=fps)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        time_base = stream.time_base = Fraction(1, fps * ticks)
        encoder_options: dict[str, str] = {}
        if stream.codec_context.name in ("libx264", "libx264rgb"):
            # Fast, but with B-frames so decode-order != presentation-order gets exercised.
            params = "bframes=2" + (f":keyint={keyint}:min-keyint={keyint}:scenecut=0" if keyint else "")
            encoder_options = {"preset": "ultrafast", "crf": "26", "x264-params": params}
        elif keyint:
            encoder_options = {"g": str(keyint)}
        stream.options = encoder_options | (options or {})
        if rotation:
            stream.set_display_rotation(rotation)
        sound = _audio_stream(container, speech) if speech is not None else None
        per_image = max(1, round(seconds_each * fps))
        durations = list(frame_durations or [ticks])
        pts = first_pts
        for n, image in enumerate(images):
            if n:
                cuts.append((pts - first_pts) / (fps * ticks))
            canvas = resized(image, margin)
            for i in range(per_image):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_pan(canvas, size, i / per_image)), "rgb24")
                frame.pts = pts
                frame.time_base = time_base  # the muxer may change the stream's
                container.mux(stream.encode(frame))
                pts += durations[index % len(durations)]
                index += 1
        container.mux(stream.encode(None))
        if sound is not None and speech is not None:
            _mux_speech(container, sound, speech, (pts - first_pts) / (fps * ticks))
    return cuts


def make_short_clip(
    path: str | Path,
    seconds: float = 2.0,
    *,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    rotation: int = 0,
) -> int:
    """One continuous shot (a pan across a photograph); returns the number of frames."""
    make_montage_video(path, [photo("astronaut")], seconds, fps, size, rotation=rotation)
    return max(1, round(seconds * fps))


def make_image(
    path: str | Path,
    fmt: str,
    *,
    size: tuple[int, int] = (320, 240),
    alpha: bool = False,
    name: str = "chelsea",
) -> tuple[int, int]:
    """A still photograph in Pillow format `fmt` ("JPEG", "PNG", "WEBP", "GIF", "BMP"...).

    With `alpha`, the left half is fully transparent (only for formats with an alpha channel).
    """
    image = Image.fromarray(resized(photo(name), size))
    if alpha:
        mask = np.full((size[1], size[0]), 255, np.uint8)
        mask[:, : size[0] // 2] = 0
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(mask))
    image.save(str(path), format=fmt.upper())
    return size


def make_animated_image(
    path: str | Path,
    fmt: str,
    images: Sequence[RGB],
    *,
    frames_each: int = 3,
    frame_ms: int = 200,
    size: tuple[int, int] = (160, 120),
) -> list[float]:
    """Animated GIF or WebP showing each image for `frames_each` frames; returns the cut times."""
    frames: list[Image.Image] = []
    for image in images:
        canvas = resized(image, (math.ceil(size[0] * 1.15), math.ceil(size[1] * 1.15)))
        frames += [
            Image.fromarray(np.ascontiguousarray(_pan(canvas, size, i / frames_each))) for i in range(frames_each)
        ]
    if fmt.upper() == "GIF":  # Pillow's default median-cut palette is ~50 ms per frame
        frames = [f.quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
    extra = {"lossless": False, "quality": 80} if fmt.upper() == "WEBP" else {}
    frames[0].save(
        str(path),
        format=fmt.upper(),
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
        **extra,
    )
    return [n * frames_each * frame_ms / 1000 for n in range(1, len(images))]


def make_cmyk_jpeg(path: str | Path, *, size: tuple[int, int] = (320, 240), name: str = "coffee") -> RGB:
    """A CMYK JPEG (as print workflows and some cameras write); returns the RGB it was made from."""
    rgb = resized(photo(name), size)
    Image.fromarray(rgb).convert("CMYK").save(str(path), format="JPEG", quality=95)
    return rgb


def make_corrupt_file(path: str | Path, kind: str = "garbage", size: int = 64 * 1024) -> None:
    """A file that cannot be (fully) decoded.

    kind="garbage": seeded random bytes; "truncated": the first half of a real MP4 (its index,
    written at the end, is missing); "undecodable": a well-formed MP4 whose coded video is
    zeroed, so demuxing works and no frame decodes; "damaged": a 2 s MP4 whose middle third of
    coded video is random bytes.
    """
    rng = np.random.default_rng(1234)
    if kind == "garbage":
        Path(path).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        return
    if kind not in ("truncated", "undecodable", "damaged"):
        raise ValueError(f"unknown corrupt kind {kind!r}")
    whole = Path(path).with_suffix(".whole.mp4")
    make_short_clip(whole, 2.0 if kind == "damaged" else 1.0)
    blob = bytearray(whole.read_bytes())
    whole.unlink()
    if kind == "truncated":
        Path(path).write_bytes(bytes(blob[: len(blob) // 2]))
        return
    at = blob.find(b"mdat")
    start, end = at + 4, at - 4 + int.from_bytes(blob[at - 4 : at], "big")
    if kind == "damaged":
        start, end = start + (end - start) // 3, start + 2 * (end - start) // 3
        blob[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    else:
        blob[start:end] = bytes(end - start)
    Path(path).write_bytes(bytes(blob))


def make_audio_only(path: str | Path, seconds: float = 1.0, *, sample_rate: int = 44100) -> None:
    """A sine tone: AAC in .m4a/.mp4/.aac, MP3 (or MP2 without libmp3lame) in .mp3."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp3":
        codec = "libmp3lame" if "libmp3lame" in av.codecs_available else "mp2"
    else:
        codec = "aac"
    samples = int(seconds * sample_rate)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        accepted = stream.codec_context.codec.audio_formats or []
        fmt = accepted[0].name if accepted else "flt"  # what this encoder takes
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=sample_rate)
        chunk = 1152
        for start in range(0, samples, chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for converted in resampler.resample(frame):
                container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
