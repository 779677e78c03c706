"""Redis state: what can be lost and rebuilt (claims, done markers, progress, result view)."""

from workers.state.claims import ClaimOutcome, ClaimStore
from workers.state.event_counts import EventCounts
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore
from workers.state.results import ResultStore
from workers.state.sequencers import SequencerOutcome, SequencerStore

__all__ = [
    "ClaimOutcome",
    "ClaimStore",
    "EventCounts",
    "ProgressStore",
    "RedisKeys",
    "ResultStore",
    "SequencerOutcome",
    "SequencerStore",
]
