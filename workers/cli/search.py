"""``capstream search`` (one query, printed) and ``capstream serve`` (the HTTP API and page)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from workers.search.objects import ObjectHit
from workers.search.query import SearchHit, SearchQuery
from workers.search.searcher import ObjectSearchResult, Searcher, SearchResult
from workers.settings import SearchSettings


def build_query(settings: SearchSettings, q: str, **options: Any) -> SearchQuery:
    """A query from CLI options; unset options take the ``CAPSTREAM_SEARCH_*`` defaults."""
    values = {name: value for name, value in options.items() if value is not None}
    values.setdefault("k", settings.search_k)
    values.setdefault("mode", settings.search_mode)
    values.setdefault("per_object", settings.search_per_object)
    return SearchQuery(q=q, **values)


def query_error(exc: ValidationError) -> str:
    """One line naming what is wrong with the query."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "query"
    message = str(first.get("msg", exc)).removeprefix("Value error, ")
    return f"invalid {where}: {message}" if where != "q" else message


def clock(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` from an hour on)."""
    minutes, secs = divmod(max(seconds, 0.0), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def format_hits(hits: list[SearchHit], width: int = 70) -> str:
    if not hits:
        return "no hits"
    rows = [("score", "time", "object", "caption")]
    for h in hits:
        source = f"{h.bucket}/{h.key}" if h.bucket and h.key else h.uri
        texts = [(h.modality, h.caption), *((a.modality, a.text) for a in h.also)]
        caption = " | ".join(f"said: {' '.join(t.split())}" if m == "speech" else " ".join(t.split()) for m, t in texts)
        caption = caption if len(caption) <= width else caption[: width - 1] + "…"
        where = f"page {h.page_number}" if h.page_number is not None else f"{clock(h.start_s)}-{clock(h.end_s)}"
        rows.append((f"{h.score:.4f}", where, source, caption))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(r)).rstrip() for r in rows
    )


def report_notes(result: SearchResult | ObjectSearchResult) -> None:
    """Truncation and fallbacks go to stderr, so stdout stays the hits."""
    if result.truncated:
        sys.stderr.write(f"capstream: query truncated to the model's limit ({result.query_tokens} tokens)\n")
    if result.notice:
        sys.stderr.write(f"capstream: {result.notice}\n")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (libraries' log handlers hold the original
    ``sys.stdout``, so only the descriptor catches them all) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def format_objects(hits: list[ObjectHit], width: int = 70) -> str:
    """One block per object: score and source, its summary, its chapters, its best moment."""
    if not hits:
        return "no hits"
    blocks = []
    for h in hits:
        source = f"{h.bucket}/{h.key}" if h.bucket and h.key else h.uri
        lines = [f"{h.score:.4f}  {source}"]
        summary = " ".join((h.summary or "(not summarized yet)").split())
        lines.append("  " + (summary if len(summary) <= width else summary[: width - 1] + "…"))
        lines += [f"  {clock(c.start_s)}-{clock(c.end_s)}  {c.title}" for c in h.chapters]
        best = h.moments[0]
        where = f"page {best.page_number}" if best.page_number is not None else clock(best.start_s)
        lines.append(f"  best moment: {where}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


async def cmd_search(q: str, as_json: bool, level: str = "segment", **options: Any) -> int:
    settings = SearchSettings()
    try:
        query = build_query(settings, q, **options)
    except ValidationError as exc:
        sys.stderr.write(f"capstream: {query_error(exc)}\n")
        return 2
    searcher = Searcher(settings)
    with stdout_to_stderr():  # vLLM logs to stdout; stdout is for the hits
        try:
            await searcher.start(embed=False)
            if level == "object":
                objects = await searcher.search_objects(query)
            else:
                result = await searcher.search(query)
        finally:
            await searcher.close()
    if level == "object":
        report_notes(objects)
        if as_json:
            print(json.dumps([h.model_dump(mode="json") for h in objects.hits], indent=2))
        else:
            print(format_objects(objects.hits))
        return 0
    report_notes(result)
    if as_json:
        print(json.dumps([h.model_dump(mode="json") for h in result.hits], indent=2))
    else:
        print(format_hits(result.hits))
    return 0


def cmd_serve(host: str | None, port: int | None, no_auth: bool = False) -> int:
    import uvicorn

    from workers.search.api import create_app

    settings = SearchSettings()
    settings = settings.model_copy(
        update={
            "serve_host": host or settings.serve_host,
            "serve_port": port or settings.serve_port,
            "serve_auth": settings.serve_auth and not no_auth,
        }
    )
    try:
        app = create_app(settings)
    except ValueError as exc:
        sys.stderr.write(f"capstream serve: {exc}\n")
        return 2
    if not settings.serve_auth:
        sys.stderr.write(
            f"capstream serve: AUTHENTICATION IS OFF (--no-auth): anyone who reaches "
            f"{settings.serve_host}:{settings.serve_port} sees every collection\n"
        )
    uvicorn.run(
        app,
        host=settings.serve_host,
        port=settings.serve_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0
