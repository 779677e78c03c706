"""loadtest.gpu_bench without a GPU: its refusal, its load shaping and its report (audio-seconds
per second per GPU for the transcribe stage included), and one short run of the whole bench with
the tiny CPU models (``--allow-cpu``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtest import gpu_bench as gb
from workers.decode.stage import segment_policy
from workers.samples import sample_paths
from workers.settings import DecodeSettings

ROOT = Path(__file__).resolve().parents[2]


SPEECH: list[gb.DecodedSpeech] = []


@pytest.fixture(scope="module")
def decoded() -> tuple[list[gb.SegmentBatch], gb.DecodeCost]:
    return gb.decode_media(sample_paths(), segment_policy(DecodeSettings()), SPEECH)


def test_refuses_without_a_gpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gb, "cuda_available", lambda: False)
    assert gb.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err and "--allow-cpu" in err


@pytest.mark.impure  # the benchmark in a child process
def test_refuses_here_as_a_command() -> None:
    """This machine has no GPU (torch says so): the command itself refuses, in one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.gpu_bench"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == gb.NO_GPU
    assert proc.stdout == ""


def test_decode_media_cuts_the_samples_as_the_worker_does(decoded: tuple[list[gb.SegmentBatch], gb.DecodeCost]) -> None:
    segments, cost = decoded
    kinds = {s.media_kind for s in segments}
    assert kinds == {"image", "video"}  # the samples hold both
    assert cost.segments == len(segments) and cost.cpu_s > 0
    assert cost.video_s == pytest.approx(sum(s.end_s - s.start_s for s in segments if s.media_kind == "video"))
    assert all(1 <= len(s.frames) <= DecodeSettings().max_frames for s in segments)


def test_load_cycles_the_samples_with_frames_no_other_segment_has(
    decoded: tuple[list[gb.SegmentBatch], gb.DecodeCost],
) -> None:
    samples, _ = decoded
    count = 2 * len(samples) + 1
    load = gb.shape_caption_load(samples, count)
    later = gb.shape_caption_load(samples, 2, first=count)  # e.g. the warm-up
    assert len(load) == count and len({s.segment_id for s in load + later}) == count + 2
    for i, seg in enumerate(load):
        base = samples[i % len(samples)]
        assert (seg.media_kind, seg.start_s, seg.end_s) == (base.media_kind, base.start_s, base.end_s)
        assert [f.pts_s for f in seg.frames] == [f.pts_s for f in base.frames]
        for fresh, orig in zip(seg.frames, base.frames, strict=True):
            with Image.open(io.BytesIO(fresh.jpeg)) as img:
                assert img.size == (orig.width, orig.height)
    jpegs = [f.jpeg for s in load + later for f in s.frames] + [f.jpeg for s in samples for f in s.frames]
    assert len(set(jpegs)) == len(jpegs)  # no two frames alike: nothing for a cache to reuse
    with pytest.raises(ValueError):
        gb.shape_caption_load([], 1)


def test_transcribe_load_cycles_the_samples_speech_with_audio_no_other_chunk_has(
    decoded: tuple[list[gb.SegmentBatch], gb.DecodeCost],
) -> None:
    assert SPEECH, "the samples' spoken video gave no speech chunk"
    load = gb.shape_transcribe_load(SPEECH, 2 * len(SPEECH) + 1)
    later = gb.shape_transcribe_load(SPEECH, 2, first=len(load))
    for i, audio in enumerate(load):  # chunk i is sample chunk i % n: its length (within 20 ms)
        base = SPEECH[i % len(SPEECH)]
        assert audio.dtype == np.float32 and abs(audio.size / 16_000 - (base.end_s - base.start_s)) < 0.02
    assert len({a.tobytes() for a in load + later}) == len(load) + 2  # nothing for an encoder cache to reuse
    with pytest.raises(ValueError):
        gb.shape_transcribe_load([], 1)


def test_synthetic_captions_are_distinct_and_caption_sized() -> None:
    texts = gb.synthetic_captions(500)
    assert len(set(texts)) == 500
    assert all(35 <= len(t.split()) <= 50 for t in texts)


def test_visual_tokens_counts_placeholders_only() -> None:
    assert gb.visual_tokens([1, 7, 7, 2, 8, 7], {7, 8}) == 4
    assert gb.visual_tokens([], {7}) == 0


def _report(gpu_memory: int | None = 40 * 1024**3, gpus: int = 1, speech: bool = True) -> gb.Report:
    return gb.build_report(
        device="test GPU",
        gpus=gpus,
        caption_model="caption",
        embed_model="embed",
        media=[Path("a.mp4")],
        caption=gb.CaptionRun(
            segments=100, video_s=500.0, wall_s=20.0, visual_tokens=[700, 900], prompt_tokens=[800, 1000],
            completion_tokens=[50, 70],
        ),
        embed=gb.EmbedRun(texts=1000, wall_s=4.0, dim=1024),
        decode=gb.DecodeCost(segments=10, video_s=50.0, cpu_s=2.0),
        peak_gpu_memory_bytes=gpu_memory,
        peak_host_rss_bytes=8 * 1024**3,
        transcribe=gb.TranscribeRun(chunks=40, audio_s=600.0, wall_s=2.0, completion_tokens=[100, 140])
        if speech else None,
        transcribe_model="whisper" if speech else None,
        transcribe_gpus=gpus,
    )  # fmt: skip


def test_report_figures() -> None:
    r = _report()
    assert r.segments_per_s_per_gpu == pytest.approx(5.0)
    assert r.video_s_per_s_per_gpu == pytest.approx(25.0)
    assert r.visual_tokens_per_segment == pytest.approx(800)
    assert r.texts_per_s_per_gpu == pytest.approx(250)
    # 5 segments/s per GPU x 0.2 CPU-s of decode per segment = 1 core.
    assert r.decode_cpu_s_per_segment == pytest.approx(0.2)
    assert r.decode_video_s_per_cpu_s == pytest.approx(25.0)
    assert r.decode_cores_per_gpu == pytest.approx(1.0)
    assert r.audio_s_per_s_per_gpu == pytest.approx(300.0) and r.transcribe_tokens_per_chunk == pytest.approx(120)
    two = _report(gpus=2)  # tensor parallel: the same engine over two GPUs
    assert two.segments_per_s_per_gpu == pytest.approx(2.5) and two.decode_cores_per_gpu == pytest.approx(0.5)
    assert two.audio_s_per_s_per_gpu == pytest.approx(150.0)
    silent = _report(speech=False)  # media without speech: nothing transcribed, nothing made up
    assert (silent.transcribe_model, silent.chunks, silent.audio_s_per_s_per_gpu) == (None, 0, 0.0)


def test_report_text_names_every_figure() -> None:
    text = gb.format_report(_report())
    for needle in (
        "captioned segments/s per GPU: 5.00",
        "video-seconds/s per GPU: 25.00",
        "visual tokens per segment: 800.0",
        "embedded texts/s per GPU: 250.0",
        "peak GPU memory: 40.00 GiB",
        "1.00 decode cores keep one GPU fed",
        "transcribed audio-seconds/s per GPU: 300.0 (whisper; 40 speech chunks, 600.0 audio s, 120.0 tokens each)",
    ):
        assert needle in text, text
    assert "not measured (no speech in the media)" in gb.format_report(_report(speech=False))
    cpu = gb.format_report(_report(gpu_memory=None))
    assert "peak GPU memory: n/a (no GPU)" in cpu and "sizes nothing" in cpu


@pytest.mark.e2e
def test_cpu_run_with_the_tiny_models(tmp_path: Path) -> None:
    """The whole bench, shortest load: both engines start, caption and embed, and report."""
    out = tmp_path / "report.json"
    args = ["--allow-cpu", "--segments", "3", "--texts", "4", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.gpu_bench", *args], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["segments"] == 3 and report["texts"] == 4
    assert report["caption_model"] == "capstream/tiny-random-qwen3-vl"
    assert report["visual_tokens_per_segment"] > 0
    assert report["completion_tokens_per_segment"] > 0
    assert report["segments_per_s_per_gpu"] > 0 and report["texts_per_s_per_gpu"] > 0
    assert report["embed_dim"] == 384  # all-MiniLM-L6-v2
    assert report["peak_gpu_memory_bytes"] is None and report["peak_host_rss_bytes"] > 0
    assert "decode cores keep one GPU fed" in proc.stdout
    # The samples' spoken video feeds the tiny Whisper: audio-seconds per second per GPU.
    assert report["transcribe_model"] == "capstream/tiny-random-whisper" and report["chunks"] == 8
    assert report["audio_s"] > 0 and report["audio_s_per_s_per_gpu"] > 0
    assert report["transcribe_tokens_per_chunk"] > 0
    assert "transcribed audio-seconds/s on CPU" in proc.stdout
