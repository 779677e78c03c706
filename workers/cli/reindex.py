"""``capstream reindex``: rebuild the search index from the topics (``workers.index.reindex``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from workers.index.reindex import ReindexRefused, reindex
from workers.settings import IndexSettings

EXIT_REFUSED = 3


async def cmd_reindex(from_scratch: bool, model: str | None, as_json: bool) -> int:
    settings = IndexSettings()
    try:
        counts = await reindex(settings, from_scratch=from_scratch, model=model)
    except ReindexRefused as exc:
        print(f"reindex refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if as_json:
        print(json.dumps(asdict(counts)))
    else:
        print(
            f"reindex {settings.index_uri} table {counts.table or settings.index_table}: "
            + " ".join(f"{k}={v}" for k, v in asdict(counts).items() if v not in (None, []))
        )
    return 0 if counts.dim_mismatch == 0 else 1
