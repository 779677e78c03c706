"""Configuration from environment variables: one settings model per worker.

Every variable is ``CAPSTREAM_<FIELD>`` (upper case); docs/configuration.md lists them with defaults.
AWS credentials are not settings: they come from the standard AWS chain (env, profile, role).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.access.collections import Collections

Backend = Literal["vllm", "openai"]
# Qwen3-Embedding's query format (model card); the task names what the search retrieves.
QWEN3_QUERY_INSTRUCTION = "Instruct: Given a search query, retrieve the video moments it describes\nQuery:{query}"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAPSTREAM_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "capstream"
    topic_objects: str = "media.objects"
    topic_segments: str = "media.segments"
    topic_captions: str = "media.captions"
    topic_embeddings: str = "media.embeddings"
    topic_removals: str = Field(default="media.removals", description="deleted objects, for the index")
    topic_speech: str = Field(default="media.speech", description="speech chunks (inline FLAC), for transcribe")
    topic_transcripts: str = Field(default="media.transcripts", description="transcripts of speech chunks")
    topic_outcomes: str = Field(default="media.outcomes", description="objects that became done or failed (webhooks)")
    topic_partitions: int = Field(default=4, ge=1, description="used when the worker creates missing topics")
    topic_replication: int = Field(default=1, ge=1, description="replication factor of topics it creates")
    max_message_bytes: int = Field(default=1_048_576, description="broker's message.max.bytes")
    session_timeout_ms: int = 10_000
    max_attempts: int = Field(default=3, ge=1, description="tries for transient errors before the DLQ")
    retry_backoff_s: float = Field(default=0.5, description="first retry delay; doubles per attempt, with jitter")
    outage_backoff_max_s: float = Field(
        default=15.0, description="longest wait between tries while Kafka/Redis/a model server is down"
    )
    drain_timeout_s: float = 60.0
    commit_timeout_s: float = Field(default=15.0, description="give up a commit (records are redelivered) after this")
    # Lag needs one OffsetFetch per newly assigned partition, then only local state: every 2 s
    # is fine-grained next to an autoscaler's 15-30 s polling.
    lag_interval_s: float = Field(default=2.0, gt=0, description="refresh the consumer lag gauge this often")
    failed_progress_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="progress of failed/skipped objects expires after this; 0 = never"
    )
    result_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="an object's result view rows expire this long after its last write"
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve Prometheus /metrics here; unset = off, 0 = any free port"
    )
    metrics_host: str = Field(default="127.0.0.1", description="address /metrics binds (0.0.0.0 in containers)")
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    # Tansu and old brokers reject InitProducerId v3+; Apache Kafka supports it.
    producer_idempotence: bool = False
    collections: str = Field(
        default="", description="collections, `name=bucket[/prefix],...;name2=...`; unset = one `default` of everything"
    )
    collections_file: str = Field(
        default="", description="a TOML file of collections (wins over CAPSTREAM_COLLECTIONS)"
    )

    def collection_rules(self) -> Collections:
        return Collections.load(self.collections, self.collections_file)


class S3Settings(CommonSettings):
    s3_endpoint_url: str | None = Field(default=None, description="unset = AWS; set for MinIO/SeaweedFS")
    s3_region: str = "us-east-1"
    s3_bucket: str = Field(default="media", description="bucket `capstream submit` uploads to")


class DecodeSettings(S3Settings):
    decode_group: str = Field(default="capstream-decode", description="consumer group of decode workers")
    decode_max_in_flight: int = Field(default=2, ge=1, description="objects decoded concurrently per worker")
    decode_threads: int = Field(default=0, ge=0, description="decode thread pool size; 0 = CPU count")
    presign_expiry_s: int = 3600
    allowed_schemes: str = Field(default="s3", description="comma list of s3,file,http,https")
    max_object_bytes: int = 2 * 1024**3
    # Event filters (comma lists; empty = no filter). Filtered events are counted, not errors.
    filter_buckets: str = Field(default="", description="bucket allow-list")
    filter_key_prefixes: str = Field(default="", description="keys must start with one of these")
    filter_key_suffixes: str = Field(default="", description="keys must end with one of these (case-insensitive)")
    filter_content_types: str = Field(default="", description="e.g. video/*,image/jpeg; events without one pass")
    http_allow_private: bool = Field(
        default=False, description="let http(s) sources reach loopback/private addresses (never link-local)"
    )
    read_timeout_s: float = Field(default=20.0, gt=0, description="connect/read timeout of one media request")
    read_retries: int = Field(default=3, ge=0, description="reconnects after a network error or HTTP 429/5xx")
    claim_ttl_s: int = 7 * 24 * 3600
    segment_policy: Literal["scene", "fixed", "keyframe"] = Field(
        default="scene", description="scene cuts + windows; fixed windows; keyframes only (docs/segmentation.md)"
    )
    max_segment_s: float = 10.0
    min_scene_s: float = 1.0
    scene_threshold: float = 0.35
    # Qwen3-VL was trained on video sampled at 2 fps; a segment's frames come at that rate up to
    # its visual-token budget, which also sets their size (docs/captions.md).
    sample_fps: float = Field(default=2.0, gt=0, description="frames sampled per second of segment")
    min_frames: int = Field(default=1, ge=1, description="frames per segment when it is long enough")
    max_frames: int = Field(default=8, ge=1, description="frames per segment; longer scenes are split")
    max_pixels: int = Field(default=448 * 448, ge=32 * 32, description="pixels per frame, at most")
    segment_visual_tokens: int = Field(
        default=768,
        ge=0,
        description="visual tokens one segment's frames may cost as a video (0 = no budget); caps max_pixels",
    )
    jpeg_quality: int = 85
    max_duration_s: float = 4 * 3600.0
    max_source_pixels: int = Field(
        default=8192 * 8192, ge=1, description="largest accepted picture, checked before decoding"
    )
    # Decode budget per object: one small file must not hold a worker for minutes (0 = off).
    max_decode_s: float = Field(default=1800.0, ge=0, description="wall-clock limit of decoding one object")
    max_decode_pixel_rate: float = Field(default=1e9, ge=0, description="decoded pixels per second of media")
    max_pixels_per_byte: float = Field(default=1e6, ge=0, description="decoded pixels per compressed byte")
    # Documents (PDF, multi-page TIFF): one segment per page. 1920x1080 is the caption stage's
    # frame limit (Qwen3-VL-4B itself takes up to 16.7 Mpx): ~2k visual tokens, a US-letter
    # page at ~150 dpi, enough for body text.
    page_max_pixels: int = Field(
        default=1920 * 1080, ge=32 * 32, description="pixels a document page is rendered at, at most"
    )
    max_pages: int = Field(default=1000, ge=1, description="documents with more pages are refused (too_many_pages)")
    # Speech: the audio track is read in the same pass as the video (docs/speech.md).
    speech: bool = Field(default=True, description="extract speech chunks from the audio track for transcription")
    speech_vad_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="silero-vad speech probability above which a window is speech"
    )
    speech_min_silence_s: float = Field(
        default=0.5, ge=0, description="a pause this long ends a stretch of speech (a chunk may be cut there)"
    )
    speech_max_chunk_s: float = Field(
        default=30.0, gt=1, le=30, description="longest speech chunk (Whisper's window is 30 s)"
    )

    @property
    def allowed_scheme_set(self) -> frozenset[str]:
        return frozenset(comma_list(self.allowed_schemes))


def comma_list(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


class IndexSettings(S3Settings):
    """The index stage and the search side: where the LanceDB table lives.

    ``index_uri`` is a local directory or ``s3://bucket/prefix`` on the object store (the
    S3 endpoint, region and AWS credentials are the same ones the decode worker uses).
    """

    index_uri: str = Field(default="~/.capstream/index", description="local directory or s3://bucket/prefix")
    index_table: str = Field(default="segments", description="LanceDB table of indexed segments")
    index_removals_table: str = Field(
        default="removals", description="LanceDB table of removal tombstones, beside the segments table"
    )
    index_group: str = Field(default="capstream-index", description="consumer group of index workers (embeddings)")
    index_removals_group: str = Field(
        default="capstream-index-removals", description="consumer group of index workers (removals)"
    )
    index_max_in_flight: int = Field(
        default=2048, ge=1, description="embeddings awaiting their batch's commit per worker (>= batch rows)"
    )
    # Each commit costs a merge and per-key lookups that grow with the table: through
    # SegmentIndex.upsert, 100k rows went in at ~2.1k rows/s in batches of 256 and ~6.5k in 5000;
    # at this default, 8,258 rows/s (loadtest.search_bench; docs/search.md, with the 1M-row run).
    index_batch_rows: int = Field(default=1024, ge=1, description="rows per table commit, at most")
    index_batch_age_s: float = Field(
        default=1.0, gt=0, description="commit a batch at latest this long after its first row"
    )
    index_vector_index_min_rows: int = Field(
        default=100_000,
        ge=0,
        description="build the vector index (IVF_HNSW_SQ) from this many rows; below, exact search",
    )
    index_optimize_interval_s: float = Field(
        default=300.0, gt=0, description="compact, update indexes and clean old versions this often"
    )
    index_keep_versions_s: float = Field(
        default=3600.0, ge=0, description="table versions younger than this survive cleanup (readers may hold them)"
    )


class BridgeSettings(S3Settings):
    """The SeaweedFS event bridge: filer change events -> S3 ObjectCreated notifications."""

    topic_filer_events: str = Field(default="seaweedfs.filer", description="where the filer publishes its events")
    s3_events_group: str = Field(default="capstream-s3-events", description="consumer group of the bridge")
    s3_events_max_in_flight: int = Field(default=16, ge=1, description="filer events translated at once")
    s3_events_bridge: bool = Field(default=False, description="`capstream run` also runs the bridge")


@dataclass(frozen=True)
class ModelServing:
    """How one model stage serves its model, whichever stage: what the shared backend bases
    (``workers.runtime.model_backend``) read.

    Each model stage declares these knobs as its own prefixed settings
    (``CAPSTREAM_CAPTION_MODEL``, ``CAPSTREAM_EMBED_MODEL``, ...). They are not one shared
    block of fields: pydantic-settings shares a block either as a nested model (the variables
    would become ``CAPSTREAM_CAPTION__MODEL``) or as a mixin (one unprefixed name for every
    stage), and the variable names are documented and deployed; the flat fields are also
    what ``CaptionSettings(caption_backend=...)`` and the docs' settings check use. So the fields stay
    flat with their own defaults, and this typed view, read by name from ``<prefix>_<knob>``,
    is the one place code meets the shared knobs: no backend code mirrors the two stages. A
    new model stage declares the same knobs under its prefix (``ModelStageSettings``) and
    gets the same backends.
    """

    stage: str  # the prefix, e.g. "caption"
    max_in_flight: int  # the HTTP client's connection cap, where the backend caps them
    model: str  # hub id or local path
    served_name: str  # recorded in outputs and sent to the server: model_name, else model
    backend: str  # "vllm" or "openai"; a stage may add its own (transcribe: "pocketsphinx")
    openai_url: str
    openai_api_key: SecretStr = field(repr=False)  # .get_secret_value() only where it is sent
    max_batch: int
    engine_args: str
    # Bounds one request with either backend: the in-process engine's wait for its result
    # (queue + batch) and the HTTP client's timeouts.
    request_timeout_s: float
    max_attempts: int  # also the engine-failure limit of the in-process engine


class ModelStageSettings(CommonSettings):
    """Settings of a stage served by a model: ``<serving_prefix>_<knob>`` for each knob of
    ``ModelServing`` (``<prefix>_model_name`` for ``served_name``)."""

    serving_prefix: ClassVar[str]

    @property
    def serving(self) -> ModelServing:
        def knob(name: str) -> Any:
            return getattr(self, f"{self.serving_prefix}_{name}")

        return ModelServing(
            stage=self.serving_prefix,
            max_in_flight=knob("max_in_flight"),
            model=knob("model"),
            served_name=knob("model_name") or knob("model"),
            backend=knob("backend"),
            openai_url=knob("openai_url"),
            openai_api_key=knob("openai_api_key"),
            max_batch=knob("max_batch"),
            engine_args=knob("engine_args"),
            request_timeout_s=knob("request_timeout_s"),
            max_attempts=self.max_attempts,
        )


class CaptionSettings(ModelStageSettings):
    serving_prefix = "caption"

    caption_group: str = Field(default="capstream-caption", description="consumer group of caption workers")
    caption_max_in_flight: int = Field(default=16, ge=1, description="segments in the engine at once per worker")
    caption_model: str = Field(default="Qwen/Qwen3-VL-4B-Instruct", description="hub id or local path")
    caption_model_name: str | None = Field(
        default=None, description="name recorded in captions and sent to the server; default: caption_model"
    )
    caption_backend: Backend = "vllm"
    caption_openai_url: str = "http://127.0.0.1:8000/v1"
    caption_openai_api_key: SecretStr = SecretStr("EMPTY")
    caption_max_tokens: int = 256
    caption_temperature: float = 0.0
    caption_max_model_len: int = 32768
    caption_max_batch: int = 16
    caption_max_images: int = Field(default=8, description="images per request; >= the decoder's max_frames")
    caption_input: Literal["video", "images"] = Field(
        default="video",
        description="a video segment's frames as one Qwen3-VL video (half the visual tokens) or as timed images",
    )
    caption_format: Literal["text", "structured"] = Field(
        default="text",
        description="prose, or JSON (summary, objects, actions, on-screen text, timed events) by guided decoding",
    )
    caption_structured_max_tokens: int = Field(
        default=4096, ge=160, description="completion tokens a structured caption may take; sets its length bounds"
    )
    # Full HD: 10x the decoder's 448² frames, so outside producers may send larger ones, yet
    # 8 such frames (~2k visual tokens each at 32x32 px per token) stay within half the
    # default context, and one decoded frame is ~6 MB of RGB, never a decompression bomb.
    caption_max_frame_pixels: int = Field(
        default=1920 * 1080,
        ge=32 * 32,
        description="largest frame (width x height) a segment may carry; larger or non-JPEG frames: invalid_frame",
    )
    caption_engine_args: str = Field(default="{}", description="JSON of extra vllm.LLM kwargs (vllm backend)")
    caption_request_timeout_s: float = Field(
        default=300.0, description="longest wait for one caption, with either backend (engine or HTTP)"
    )
    caption_prompt: str = (
        "These frames are from one scene of a video, with their timestamps. "
        "Describe what happens in one or two factual sentences."
    )


class EmbedSettings(ModelStageSettings):
    serving_prefix = "embed"

    embed_group: str = Field(default="capstream-embed", description="consumer group of embed workers")
    embed_max_in_flight: int = Field(default=64, ge=1, description="captions being embedded at once per worker")
    embed_speech_group: str = Field(
        default="capstream-embed-speech", description="consumer group of embed workers (transcripts)"
    )
    embed_model: str = Field(default="Qwen/Qwen3-Embedding-8B", description="hub id or local path; 0.6B for small GPUs")
    embed_model_name: str | None = Field(
        default=None, description="name recorded in embeddings and sent to the server; default: embed_model"
    )
    embed_backend: Backend = "vllm"
    embed_openai_url: str = "http://127.0.0.1:8001/v1"
    embed_openai_api_key: SecretStr = SecretStr("EMPTY")
    embed_max_batch: int = 64
    embed_engine_args: str = Field(default="{}", description="JSON of extra vllm.LLM kwargs (vllm backend)")
    embed_request_timeout_s: float = Field(
        default=120.0, description="longest wait for one embedding, with either backend (engine or HTTP)"
    )
    # Qwen3-Embedding embeds documents bare and queries with an instruction (its model card:
    # "Instruct: {task}\nQuery:{query}"); models trained without one (MiniLM) want it empty.
    embed_query_instruction: str = Field(
        default=QWEN3_QUERY_INSTRUCTION,
        description="template for search queries ({query} = the query text); empty = the query as is",
    )


TranscribeBackend = Literal["vllm", "openai", "pocketsphinx"]


class WebhookSettings(CommonSettings):
    """The webhooks stage: relays the outcome outbox onto its topic and POSTs signed outcomes."""

    webhooks_group: str = Field(default="capstream-webhooks", description="consumer group of webhooks workers")
    webhook_max_in_flight: int = Field(
        default=32, ge=1, description="outcomes being delivered at once per worker (a hung receiver holds one each)"
    )
    webhook_max_attempts: int = Field(default=6, ge=1, description="POSTs of one outcome to one URL before its DLQ")
    webhook_backoff_s: float = Field(default=1.0, gt=0, description="wait before the second POST; doubles per try")
    webhook_backoff_max_s: float = Field(default=60.0, gt=0, description="longest wait between POSTs")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="a POST with no response within this fails")
    webhook_allow_private: bool = Field(
        default=False, description="allow webhook URLs on loopback/private addresses (never metadata/link-local)"
    )
    webhook_claim_idle_s: float = Field(
        default=30.0, gt=0, description="take over outbox entries a stopped relay left unacknowledged this long"
    )


class SummarizeSettings(IndexSettings):
    """The summarize stage: done objects' timelines (read from the index) -> the objects table.
    The model is the caption stage's (its ``CAPSTREAM_CAPTION_*`` model and backend)."""

    summarize_group: str = Field(default="capstream-summarize", description="consumer group of summarize workers")
    summarize_max_in_flight: int = Field(default=4, ge=1, description="objects being summarized at once per worker")
    summarize_max_tokens: int = Field(
        default=1024, ge=128, description="tokens one reply (a window's summary and chapters) may take"
    )
    summarize_window_chars: int = Field(
        default=16_000,
        ge=200,
        description="timeline characters per model call; keep (window + max tokens) within the model's context",
    )
    summarize_max_chapters: int = Field(default=12, ge=1, description="chapters per window of the timeline, at most")
    summarize_index_wait_s: float = Field(
        default=120.0, gt=0, description="wait this long for a done object's rows to reach the index, per try"
    )


class TranscribeSettings(ModelStageSettings):
    serving_prefix = "transcribe"

    transcribe_group: str = Field(default="capstream-transcribe", description="consumer group of transcribe workers")
    transcribe_max_in_flight: int = Field(
        default=16, ge=1, description="speech chunks in the engine at once per worker"
    )
    transcribe_model: str = Field(default="openai/whisper-large-v3-turbo", description="hub id or local path")
    transcribe_model_name: str | None = Field(
        default=None, description="name recorded in transcripts and sent to the server; default: transcribe_model"
    )
    # pocketsphinx: the offline recognizer whose English model ships in its wheel (real words
    # without a download; the demo's and tests' profile), not a production choice.
    transcribe_backend: TranscribeBackend = Field(
        default="vllm", description="vllm (in-process Whisper), openai (`vllm serve`) or pocketsphinx (offline)"
    )
    transcribe_openai_url: str = "http://127.0.0.1:8002/v1"
    transcribe_openai_api_key: SecretStr = SecretStr("EMPTY")
    transcribe_max_batch: int = 16
    transcribe_max_tokens: int = Field(default=448, ge=1, description="tokens one chunk's transcript may take")
    transcribe_language: str | None = Field(
        default=None, description="ISO 639-1 code to transcribe in; unset = the stream's tag, else detected"
    )
    transcribe_engine_args: str = Field(default="{}", description="JSON of extra vllm.LLM kwargs (vllm backend)")
    transcribe_request_timeout_s: float = Field(
        default=120.0, description="longest wait for one transcript, with either backend (engine or HTTP)"
    )


class SearchSettings(IndexSettings, EmbedSettings):
    """``capstream search`` and ``capstream serve``: the index to read, the embed model (same
    model and backend as the embed stage), query defaults and the HTTP server."""

    search_k: int = Field(default=10, ge=1, le=200, description="hits per query")
    search_mode: Literal["hybrid", "vector", "text"] = Field(
        default="hybrid", description="hybrid (vector + BM25, score fusion), vector or text"
    )
    search_per_object: int = Field(default=3, ge=0, description="most hits from one object per page; 0 = no cap")
    search_max_query_tokens: int = Field(
        default=0, ge=0, description="query token limit; 0 = the embed model's own limit"
    )
    search_presign_expiry_s: int = Field(default=3600, ge=1, description="lifetime of the page's media links")
    search_max_query_chars: int = Field(
        default=16_384, ge=1, description="longer queries are refused (422) before they are tokenised"
    )
    search_max_depth: int = Field(default=1000, ge=1, description="most hits one query pages through")
    search_cursor_ttl_s: int = Field(default=900, ge=1, description="a page cursor of /search expires after this")
    search_public_s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint the page's media links name (what a browser reaches); unset = the S3 endpoint",
    )
    serve_allowed_hosts: str = Field(
        default="",
        description="Host headers serve answers, comma-separated; unset = loopback names on a loopback address",
    )
    ask_k: int = Field(default=8, ge=1, le=20, description="moments `ask` retrieves and shows the model")
    ask_max_tokens: int = Field(
        default=512, ge=64, description="tokens an answer may take (its JSON included); sets the answer's length bound"
    )
    ask_max_question_chars: int = Field(default=2000, ge=1, description="a longer question is cut (and says so)")
    serve_host: str = Field(default="127.0.0.1", description="`capstream serve` listen address")
    serve_port: int = Field(default=8686, ge=1, le=65535, description="`capstream serve` port")
    serve_auth: bool = Field(
        default=True, description="require an API key on every route but /healthz and the page; false only on loopback"
    )
    serve_rate_limit_per_min: int = Field(default=600, ge=0, description="requests per API key per minute; 0 = off")
    serve_cors_origins: str = Field(default="", description="origins allowed by CORS, comma-separated; unset = off")
