"""Redis state: what can be lost and rebuilt (claims, done markers, progress, result view)."""

from workers.state.claims import ClaimOutcome, ClaimStore
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore
from workers.state.results import ResultStore

__all__ = ["ClaimOutcome", "ClaimStore", "ProgressStore", "RedisKeys", "ResultStore"]
