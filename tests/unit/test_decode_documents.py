"""Documents (issue 12, item 4): a PDF or a multi-page TIFF becomes one segment per page,
rendered within the page pixel budget, and bad documents are refused with a stable reason.

The documents are built by tests/document_factory.py; peak memory of the PDF bomb is measured
in a child process from its VmHWM (test_decode_bombs.decode_in_child), not ru_maxrss.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image
from pydantic import ValidationError

from schemas.events import ObjectCreated
from schemas.segments import SegmentBatch
from tests.document_factory import PAGE_COLOURS, Page, build_pdf, build_tiff, coloured_pages
from tests.unit.test_decode_bombs import decode_in_child
from workers.decode.dispatch import decode_segments
from workers.decode.document_source import DocumentUnreadable, local_copy
from workers.decode.documents import DecodedPage, render_scale
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment, SegmentFrame
from workers.decode.stage import _to_batch, segment_policy
from workers.settings import CaptionSettings, DecodeSettings

MB = 1024 * 1024


def _decode(path: Path, **policy: object) -> list[DecodedSegment]:
    return list(decode_segments(str(path), SegmentPolicy(**policy)))  # type: ignore[arg-type]


def _refusal(path: Path, **policy: object) -> MediaError:
    with pytest.raises(MediaError) as info:
        _decode(path, **policy)
    return info.value


def _centre_colour(jpeg: bytes) -> tuple[int, int, int]:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    r, g, b = image.getpixel((image.width // 2, image.height // 2))  # type: ignore[misc]
    return r, g, b


def _close(actual: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - e) <= 12 for a, e in zip(actual, expected, strict=True))


def test_each_pdf_page_is_one_segment_in_order_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "five.pdf"
    path.write_bytes(build_pdf(coloured_pages(5)))
    pages = _decode(path)
    assert all(isinstance(p, DecodedPage) for p in pages)
    assert [(p.index, p.page_number, p.page_count) for p in pages] == [  # type: ignore[attr-defined]
        (i, i + 1, 5) for i in range(5)
    ]
    assert [_close(_centre_colour(p.frames[0].jpeg), PAGE_COLOURS[i]) for i, p in enumerate(pages)] == [True] * 5
    assert all(p.thumbnail and (p.start_s, p.end_s, p.reason, len(p.frames)) == (0.0, 0.0, "end", 1) for p in pages)


def test_a_letter_page_fills_the_pixel_budget_on_the_32_px_grid(tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(build_pdf(coloured_pages(1)))
    for budget in (1920 * 1080, 448 * 448):
        frame = _decode(path, page_max_pixels=budget)[0].frames[0]
        assert frame.width * frame.height <= budget
        assert frame.width % 32 == 0 and frame.height % 32 == 0
        assert frame.width * frame.height > 0.85 * budget, (frame.width, frame.height)  # the budget is used
        assert frame.height / frame.width == pytest.approx(792 / 612, rel=0.05)


def test_small_pages_stop_at_300_dpi() -> None:
    # An index card (3 x 5 in) in a 2 Mpx budget would be 450 dpi; 300 dpi is 900 x 1500 px.
    assert render_scale(216, 360, 1920 * 1080, "card") == pytest.approx(300 / 72)
    assert render_scale(612, 792, 1920 * 1080, "letter") == pytest.approx((1920 * 1080 / (612 * 792)) ** 0.5)


@pytest.mark.impure  # a child process, for its own peak RSS
@pytest.mark.parametrize(("width", "height"), [(14400, 14400), (10_000_000, 10_000_000)])
def test_pdf_bomb_pages_are_rendered_within_the_budget(tmp_path: Path, width: float, height: float) -> None:
    # 14 400 pt is the largest page PDF 1.7 allows (200 in): 207 Mpx (830 MB as BGRA) at 72 dpi.
    path = tmp_path / "bomb.pdf"
    path.write_bytes(build_pdf([Page(width, height, PAGE_COLOURS[2])] * 3))
    assert path.stat().st_size < 4096
    pages = _decode(path)
    assert len(pages) == 3
    assert all(p.frames[0].width * p.frames[0].height <= SegmentPolicy().page_max_pixels for p in pages)
    assert _close(_centre_colour(pages[0].frames[0].jpeg), PAGE_COLOURS[2])
    result = decode_in_child(path)  # the production entry point, default policy, own process
    assert result["reason"] is None and result["segments"] == 3, result
    # Imports (PyAV, numpy, Pillow, PDFium) are ~100 MB; one page at 72 dpi would be 600+ MB.
    assert result["peak_rss"] < 250 * MB, result


def test_very_long_pages_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ribbon.pdf"
    path.write_bytes(build_pdf([Page(612, 792, PAGE_COLOURS[0]), Page(10, 14400, PAGE_COLOURS[1])]))
    error = _refusal(path)
    assert error.reason == "unsupported_media" and "page 2" in error.message


def test_a_password_protected_pdf_is_encrypted_document(tmp_path: Path) -> None:
    data = build_pdf(coloured_pages(2), user_password="secret")
    assert len(pdfium.PdfDocument(data, password="secret")) == 2  # really encrypted, and valid
    path = tmp_path / "locked.pdf"
    path.write_bytes(data)
    error = _refusal(path)
    assert error.reason == "encrypted_document" and "password" in error.message


def test_a_pdf_encrypted_without_a_user_password_is_read_like_any_viewer_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "owner-only.pdf"
    path.write_bytes(build_pdf(coloured_pages(2), user_password=""))
    pages = _decode(path)
    assert [p.page_number for p in pages] == [1, 2]  # type: ignore[attr-defined]
    assert _close(_centre_colour(pages[1].frames[0].jpeg), PAGE_COLOURS[1])


def test_too_many_pages_are_refused_before_any_page_is_rendered(tmp_path: Path) -> None:
    path = tmp_path / "huge.pdf"
    path.write_bytes(build_pdf(coloured_pages(5000)))
    started = time.perf_counter()
    segments = decode_segments(str(path), SegmentPolicy())
    with pytest.raises(MediaError) as info:
        next(segments)  # the first page is never produced
    elapsed = time.perf_counter() - started
    sys.stdout.write(f"\n5000-page PDF refused after {elapsed:.2f} s: {info.value.message}\n")
    assert info.value.reason == "too_many_pages"
    assert "5000 pages" in info.value.message and "CAPSTREAM_MAX_PAGES" in info.value.message
    assert elapsed < 5.0


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("garbage.pdf", b"%PDF-1.7\nthis is not a PDF body at all\n" * 20),
        ("header-only.pdf", b"%PDF-1.4\n"),
        ("no-pages.pdf", build_pdf([])),
        ("truncated.pdf", build_pdf(coloured_pages(3))[:60]),
    ],
)
def test_malformed_pdfs_are_corrupt_media(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    error = _refusal(path)
    assert error.reason == "corrupt_media", error.message
    assert "PDF" in error.message or "pages" in error.message


def test_pdfs_from_a_file_object_and_junk_before_the_header(tmp_path: Path) -> None:
    data = b"\x00" * 200 + build_pdf(coloured_pages(2))  # readers accept the header in the first KiB
    pages = list(decode_segments(io.BytesIO(data), SegmentPolicy(), name="upload.pdf"))
    assert [p.page_number for p in pages] == [1, 2]  # type: ignore[attr-defined]


def test_a_multi_page_tiff_is_one_segment_per_page(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    path.write_bytes(build_tiff([((1700, 2200), PAGE_COLOURS[i]) for i in range(3)]))
    pages = _decode(path)
    assert [(type(p).__name__, p.page_number) for p in pages] == [("DecodedPage", n) for n in (1, 2, 3)]  # type: ignore[attr-defined]
    assert [_close(_centre_colour(p.frames[0].jpeg), PAGE_COLOURS[i]) for i, p in enumerate(pages)] == [True] * 3
    frame = pages[0].frames[0]
    assert frame.width * frame.height <= SegmentPolicy().page_max_pixels and frame.width % 32 == 0


def test_a_single_page_tiff_stays_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.tif"
    path.write_bytes(build_tiff([((640, 480), PAGE_COLOURS[0])]))
    (segment,) = _decode(path)
    assert not isinstance(segment, DecodedPage)


def test_tiff_limits_pages_and_each_declared_page_size(tmp_path: Path) -> None:
    many = tmp_path / "many.tif"
    many.write_bytes(build_tiff([((32, 32), PAGE_COLOURS[0])] * 12))
    assert _refusal(many, max_pages=10).reason == "too_many_pages"
    big_second = tmp_path / "big-second.tif"
    big_second.write_bytes(build_tiff([((64, 64), PAGE_COLOURS[0]), ((3000, 3000), PAGE_COLOURS[1])]))
    error = _refusal(big_second, max_source_pixels=2000 * 2000)
    assert error.reason == "resolution_too_large" and "page 2" in error.message and "3000x3000" in error.message


@pytest.mark.impure  # a child process: without the lock PDFium crashes it
def test_pdfs_decode_concurrently_on_threads(tmp_path: Path) -> None:
    # PDFium is not thread-safe; the decode stage decodes objects on a thread pool. Text is
    # what breaks it (shared font caches): without the lock this aborts or segfaults.
    path = tmp_path / "three.pdf"
    path.write_bytes(build_pdf([Page(612, 792, colour, text_lines=60) for colour in PAGE_COLOURS[:3]]))
    script = f"""
import threading
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
results = []
def run():
    for _ in range(15):
        pages = decode_segments({str(path)!r}, SegmentPolicy(page_max_pixels=256 * 256))
        results.append([p.page_number for p in pages])
threads = [threading.Thread(target=run) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert results == [[1, 2, 3]] * 60, results
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_download_errors_never_quote_the_presigned_url() -> None:
    url = "http://127.0.0.1:9/doc.pdf?X-Amz-Signature=s3cret"  # port 9 (discard): refused
    with pytest.raises(DocumentUnreadable) as info, local_copy(url, 2.0, "http://127.0.0.1:9/doc.pdf"):
        pass
    assert "s3cret" not in str(info.value) and "doc.pdf" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_pages_become_page_segment_batches() -> None:
    page = DecodedPage(
        index=2, start_s=0.0, end_s=0.0, reason="end", frames=_decode_frames(), page_number=3, page_count=4
    )
    obj = ObjectCreated(uri="s3://media/report.pdf", bucket="media", key="report.pdf")
    batch = _to_batch(obj, page, datetime(2026, 11, 30, tzinfo=UTC))
    assert (batch.media_kind, batch.page_number, batch.segment_index) == ("page", 3, 2)
    assert batch.segment_ref()["page_number"] == 3  # carried to captions and embeddings
    fields = batch.model_dump() | {"page_number": None}
    with pytest.raises(ValidationError, match="page_number"):
        SegmentBatch.model_validate(fields)
    with pytest.raises(ValidationError, match="page_number"):
        SegmentBatch.model_validate(batch.model_dump() | {"media_kind": "image"})


def _decode_frames() -> tuple[SegmentFrame, ...]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    return (SegmentFrame(0, 0.0, 64, 64, buf.getvalue()),)


def test_settings_reach_the_policy_and_pages_fit_the_caption_stage() -> None:
    policy = segment_policy(DecodeSettings(page_max_pixels=1024 * 1024, max_pages=7))
    assert (policy.page_max_pixels, policy.max_pages) == (1024 * 1024, 7)
    assert DecodeSettings().page_max_pixels <= CaptionSettings().caption_max_frame_pixels
    with pytest.raises(ValueError, match="max_pages"):
        SegmentPolicy(max_pages=0)


@pytest.mark.impure  # the CLI in a child process, as a user runs it
def test_cli_lists_the_pages(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(build_pdf(coloured_pages(2) + [Page(842, 595, PAGE_COLOURS[3])]))
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "segments", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CAPSTREAM_LOG_LEVEL": "WARNING", "CAPSTREAM_PAGE_MAX_PIXELS": str(512 * 512)},
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["index"], r["page_number"]) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    assert all(r["width"] * r["height"] <= 512 * 512 for r in rows)
    assert rows[2]["width"] > rows[2]["height"], "the landscape page stays landscape"
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(build_pdf(coloured_pages(1), user_password="pw"))
    refused = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "segments", str(locked), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CAPSTREAM_LOG_LEVEL": "WARNING"},
    )
    assert refused.returncode == 2 and "encrypted_document" in refused.stderr and refused.stdout == ""


def test_one_stage_thread_per_document_does_not_serialise_other_work() -> None:
    # The PDFium lock is held per call, never across a yield: a consumer holding a page does
    # not block another document's rendering.
    data = build_pdf(coloured_pages(2))
    first = decode_segments(io.BytesIO(data), SegmentPolicy(page_max_pixels=128 * 128))
    next(first)  # holds page 1, document 1 still open
    other: list[int] = []
    worker = threading.Thread(
        daemon=True,  # blocked for good if the lock were held across the yield
        target=lambda: other.extend(
            p.page_number  # type: ignore[attr-defined]
            for p in decode_segments(io.BytesIO(data), SegmentPolicy(page_max_pixels=128 * 128))
        ),
    )
    worker.start()
    worker.join(10)
    finished_meanwhile = not worker.is_alive()
    first.close()
    worker.join(30)
    assert finished_meanwhile and other == [1, 2]
