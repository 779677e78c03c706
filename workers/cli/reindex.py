"""``capstream reindex``: rebuild the search index from the topics (``workers.index.reindex``)."""

from __future__ import annotations

import json
from dataclasses import asdict

from workers.index.reindex import reindex
from workers.settings import IndexSettings


async def cmd_reindex(from_scratch: bool, model: str | None, as_json: bool) -> int:
    settings = IndexSettings()
    counts = await reindex(settings, from_scratch=from_scratch, model=model)
    if as_json:
        print(json.dumps(asdict(counts)))
    else:
        print(
            f"reindex {settings.index_uri} table {settings.index_table}: "
            + " ".join(f"{k}={v}" for k, v in asdict(counts).items())
        )
    return 0 if counts.dim_mismatch == 0 else 1
