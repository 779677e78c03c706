"""The index stage's two consumer loops, as the stage registry builds them: embeddings and
removals, in two groups sharing one writer thread (``IndexParts``)."""

from __future__ import annotations

from typing import Any

from workers.index.stage import IndexParts, IndexStage, RemovalStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import IndexSettings

# Removals are rare and cheap (one tombstone each): a small window is plenty.
_REMOVALS_IN_FLIGHT = 16


def build_loops(settings: IndexSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    parts, s = IndexParts(settings), settings
    return [
        StageLoop(IndexStage(s, parts), s, s.index_group, s.index_max_in_flight, res.metrics),
        StageLoop(RemovalStage(s, parts), s, s.index_removals_group, _REMOVALS_IN_FLIGHT, res.metrics),
    ]
