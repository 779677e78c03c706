"""Wire models of capstream: every Kafka message and the inbound event parsers."""

from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.events import EventBatch, EventParseError, ObjectCreated, parse_event
from schemas.progress import ObjectProgress, ObjectState
from schemas.segments import Frame, SegmentBatch
from schemas.speech import SpeechChunk, TimedText, Transcript

__all__ = [
    "Caption",
    "DeadLetter",
    "Embedding",
    "EventBatch",
    "EventParseError",
    "Frame",
    "ObjectCreated",
    "ObjectProgress",
    "ObjectState",
    "SegmentBatch",
    "SpeechChunk",
    "TimedText",
    "Transcript",
    "parse_event",
]
