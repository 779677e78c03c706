"""Documents -> one segment per page: PDF pages rendered by PDFium, multi-page TIFF pages
decoded by Pillow, each page one JPEG within the page pixel budget.

A page has no pixel size of its own (PDF) or one that can be anything (TIFF), so the budget
decides: a PDF page is drawn at the scale that makes width x height fit `page_max_pixels`
(capped at 300 dpi, where OCR gains nothing more) on Qwen3-VL's 32 px grid, whatever size it
declares. Three pages declaring 14 400 pt square (PDF's largest, 200 inches) drawn at 72 dpi
(207 Mpx each) peaked at 2.4 GB RSS and took 94 s; within the default 2 Mpx budget each is
1440 x 1440 px and the decode peaks at 132 MB RSS, interpreter included (test_decode_documents).
Pages longer than 200 times their width are refused: Qwen3-VL's processor refuses them too,
and the bound keeps the bitmap's sides (not just its area) small. Drawing straight at the grid
size instead of drawing and resizing: 30 ms instead of 50 ms of CPU per text-dense letter page.

Refusals, before any page is drawn: a PDF that needs a password (`encrypted_document`; one
encrypted with an empty user password opens like any viewer opens it), more pages than
`max_pages` (`too_many_pages`: a partial index would answer "not in this document" for
every page past the cut, so the uploader is told instead), and a document PDFium or Pillow
cannot parse (`corrupt_media`). The wall-clock decode budget applies between pages.

PDFium is not thread-safe, not even across documents (pypdfium2's documentation: calls
from two threads "would crash or corrupt the process"), and the decode stage decodes
several objects on a thread pool. Every PDFium call holds `_PDFIUM`, one lock per process
because PDFium's state is per process; the lock is released while a rendered page is
encoded and handed on, so documents interleave page by page.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO, RawIOBase
from pathlib import Path
from typing import BinaryIO, Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image, TiffImagePlugin

from workers.decode.budget import DecodeBudget
from workers.decode.container import check_resolution
from workers.decode.document_source import local_copy
from workers.decode.errors import MediaError
from workers.decode.frames import encode_within_budget, frame_to_image, target_size
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment, SegmentFrame
from workers.decode.thumbnail import make_thumbnail

_PDFIUM: Final = threading.Lock()
_POINTS_PER_INCH: Final = 72.0
_MAX_DPI: Final = 300.0
_WHITE: Final = (255, 255, 255)
_MAX_ASPECT: Final = 200.0  # Qwen2-VL/Qwen3-VL smart_resize refuses a longer side ratio
_LOCKED_OUT: Final = frozenset({pdfium_raw.FPDF_ERR_PASSWORD, pdfium_raw.FPDF_ERR_SECURITY})


@dataclass(frozen=True, kw_only=True)
class DecodedPage(DecodedSegment):
    """One page of a document (start_s == end_s == 0; `index` is page_number - 1)."""

    page_number: int
    page_count: int


def pdf_pages(
    source: str | BinaryIO | RawIOBase, policy: SegmentPolicy, *, shown: str, timeout_s: float
) -> Iterator[DecodedPage]:
    """The pages of the PDF at `source` (local path, presigned URL or file object), in order."""
    with local_copy(source, timeout_s, shown) as path:
        document = _open_pdf(path, shown)
        try:
            with _PDFIUM:
                count = len(document)
            _check_page_count(count, policy, shown)
            budget = _page_budget(policy, shown)
            for number in range(1, count + 1):
                image = _render_pdf_page(document, number, policy.page_max_pixels, shown)
                budget.charge(image.width * image.height, 0.0)
                yield _page_segment(image, number, count, policy)
        finally:
            with _PDFIUM:
                document.close()


def _open_pdf(path: Path, shown: str) -> pdfium.PdfDocument:
    try:
        with _PDFIUM:
            return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if exc.err_code in _LOCKED_OUT:
            raise MediaError(
                "encrypted_document", f"{shown}: the PDF is encrypted and needs a password to open ({exc})"
            ) from exc
        raise MediaError("corrupt_media", f"{shown}: PDFium cannot read this PDF ({exc})") from exc


def _render_pdf_page(document: pdfium.PdfDocument, number: int, max_pixels: int, shown: str) -> Image.Image:
    with _PDFIUM:
        try:
            page = document[number - 1]
        except pdfium.PdfiumError as exc:
            raise MediaError("corrupt_media", f"{shown}: page {number} cannot be loaded ({exc})") from exc
        try:
            width, height = page.get_size()
            scale = render_scale(width, height, max_pixels, f"{shown}: page {number}")
            size = target_size(math.ceil(width * scale), math.ceil(height * scale), max_pixels)
            # Drawn straight at the grid size (one side exact, the other up to 31 px short and
            # padded with white): no resampling, which cost as much as drawing the page.
            fit = min(size[0] / width, size[1] / height) * (1 - 1e-9)
            bitmap = page.render(scale=fit, rev_byteorder=True, may_draw_forms=False)
            try:
                canvas = Image.new("RGB", size, _WHITE)
                canvas.paste(bitmap.to_pil())  # a copy: the bitmap's buffer dies with it
            finally:
                bitmap.close()
        finally:
            page.close()
    return canvas


def render_scale(width: float, height: float, max_pixels: int, shown: str) -> float:
    """Pixels per PDF unit for a `width` x `height` page: the most that fits `max_pixels`,
    at most 300 dpi."""
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise MediaError("corrupt_media", f"{shown}: invalid page size {width} x {height}")
    if max(width, height) / min(width, height) > _MAX_ASPECT:
        raise MediaError(
            "unsupported_media",
            f"{shown}: {width:g} x {height:g} pt is longer than {_MAX_ASPECT:g} times its width",
        )
    return min(_MAX_DPI / _POINTS_PER_INCH, math.sqrt(max_pixels / (width * height)))


def tiff_page_count(blob: bytes) -> int:
    """Pages in the TIFF `blob` (0 when Pillow cannot parse it: FFmpeg then reports it)."""
    try:
        return int(_open_tiff(blob).n_frames)
    except Exception:  # noqa: BLE001 - any parse failure leaves the file to FFmpeg's decoder
        return 0


def tiff_pages(blob: bytes, policy: SegmentPolicy, *, shown: str) -> Iterator[DecodedPage]:
    """The pages of the multi-page TIFF `blob`, in order; each page's declared size is
    checked against `max_source_pixels` before it is decoded."""
    try:
        tiff = _open_tiff(blob)
        count = int(tiff.n_frames)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
        raise MediaError("corrupt_media", f"{shown}: Pillow cannot read this TIFF ({exc})") from exc
    _check_page_count(count, policy, shown)
    budget = _page_budget(policy, shown)
    for number in range(1, count + 1):
        try:
            tiff.seek(number - 1)
            check_resolution(tiff.width, tiff.height, policy, f"{shown}: page {number}")
            size = target_size(tiff.width, tiff.height, policy.page_max_pixels)
            image = frame_to_image(tiff, size)
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001 - as above
            raise MediaError("corrupt_media", f"{shown}: page {number} cannot be decoded ({exc})") from exc
        budget.charge(tiff.width * tiff.height, 0.0)
        yield _page_segment(image, number, count, policy)


def _open_tiff(blob: bytes) -> TiffImagePlugin.TiffImageFile:
    # The plugin itself, not Image.open: no process-global bomb limit (sizes are checked
    # against the policy per page instead).
    return TiffImagePlugin.TiffImageFile(BytesIO(blob))


def _check_page_count(count: int, policy: SegmentPolicy, shown: str) -> None:
    if count > policy.max_pages:
        raise MediaError(
            "too_many_pages", f"{shown}: {count} pages, over the limit of {policy.max_pages} (CAPSTREAM_MAX_PAGES)"
        )
    if count < 1:
        raise MediaError("corrupt_media", f"{shown}: the document has no pages")


def _page_budget(policy: SegmentPolicy, shown: str) -> DecodeBudget:
    # Pages have no media time, so only the wall clock applies; the pixels per page are
    # bounded by the render scale (PDF) or max_source_pixels (TIFF), pages by max_pages.
    return DecodeBudget(base_pixels=0, pixel_rate=0, pixels_per_byte=0, max_seconds=policy.max_decode_s, shown=shown)


def _page_segment(image: Image.Image, number: int, count: int, policy: SegmentPolicy) -> DecodedPage:
    encoded = encode_within_budget([(0.0, image)], policy.jpeg_quality, policy.max_segment_bytes)
    frames = tuple(SegmentFrame(i, 0.0, f.width, f.height, f.jpeg) for i, f in enumerate(encoded))
    return DecodedPage(
        index=number - 1,
        start_s=0.0,
        end_s=0.0,
        reason="end",
        frames=frames,
        thumbnail=make_thumbnail(image),
        page_number=number,
        page_count=count,
    )
