"""Retrieval quality of `capstream search`: a hand-written corpus through the real pipeline.

    python -m loadtest.search_eval [--corpus FILE] [--limit N] [--keep]

FILE (default ``loadtest/data/search_corpus.json``) is JSON:
``{"segments": [{"id", "object", "start_s", "end_s", "caption"}], "queries": [{"q", "relevant":
[segment ids], "kind"?}]}``; ``kind`` (optional, e.g. ``paraphrase`` / ``exact``) splits the table.

What runs: a private local stack (broker, Redis, SeaweedFS) in a temporary directory; one
``Caption`` record per corpus segment is published to the captions topic (the test captioning
model is random, so the corpus skips that step only); the embed stage (vLLM, the offline
all-MiniLM-L6-v2) and the index stage (LanceDB) run in this process exactly as
``capstream run`` runs them, until the table holds every segment and its full-text index
covers every row. Then the stages stop and every query runs in every mode through
``Searcher.search`` - the code ``capstream search`` runs, with its defaults (k=10, at most
``CAPSTREAM_SEARCH_PER_OBJECT`` hits per object). Prints recall@1/5/10 (relevant segments found
in the top k / relevant segments) and MRR (1 / rank of the first relevant hit, 0 if none in
the top 10) per mode and per query kind; the last line is
``search_eval: segments=N queries=N recall@5 hybrid=… vector=… text=… mrr hybrid=…``.

``--limit N`` keeps the first N queries of each kind and the objects they need (a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.captions import Caption
from schemas.ids import object_version_id, segment_id

# lancedb is imported here, on the main thread: imported first from index_state's thread
# while run_stages imported it on the main thread, one run failed with KeyError: 'lancedb'.
from workers.index.table import connect, open_table, text_index
from workers.runtime.logging import configure_logging
from workers.settings import CommonSettings, IndexSettings, SearchSettings

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "search_corpus.json"
MODES = ("hybrid", "vector", "text")
CUTOFFS = (1, 5, 10)
EVAL_BUCKET = "eval"
INDEX_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Query:
    q: str
    relevant: tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class Corpus:
    segments: list[dict[str, Any]]
    queries: list[Query]


def load_corpus(path: Path, limit: int | None = None) -> Corpus:
    """Read and check a corpus file; with ``limit``, the first ``limit`` queries of each kind
    and the segments of the objects they name."""
    data = json.loads(Path(path).read_text())
    segments = list(data["segments"])
    ids = [s["id"] for s in segments]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate segment ids in the corpus")
    known = set(ids)
    queries = [Query(q["q"], tuple(q["relevant"]), q.get("kind", "all")) for q in data["queries"]]
    for query in queries:
        missing = [r for r in query.relevant if r not in known]
        if not query.relevant or missing:
            raise ValueError(f"query {query.q!r}: relevant ids missing from the corpus: {missing or 'none given'}")
    if limit is not None:
        per_kind: dict[str, int] = defaultdict(int)
        kept = []
        for query in queries:
            if per_kind[query.kind] < limit:
                per_kind[query.kind] += 1
                kept.append(query)
        queries = kept
        by_id = {s["id"]: s for s in segments}
        objects = {by_id[r]["object"] for q in queries for r in q.relevant}
        segments = [s for s in segments if s["object"] in objects]
    return Corpus(segments, queries)


def source_uri(obj: str) -> str:
    return f"s3://{EVAL_BUCKET}/{obj}"


def to_captions(segments: list[dict[str, Any]]) -> tuple[list[Caption], dict[str, str]]:
    """One Caption per corpus segment, with deterministic ids as the decoder would derive them
    (object id = uuid5 of the object's name, segment id = uuid5(object id, index)). Returns the
    captions and a map pipeline segment id -> corpus id."""
    captions: list[Caption] = []
    corpus_id: dict[str, str] = {}
    index_in_object: dict[str, int] = defaultdict(int)
    for seg in segments:
        obj = seg["object"]
        oid = object_version_id(source_uri(obj), "corpus")
        index = index_in_object[obj]
        index_in_object[obj] += 1
        sid = segment_id(oid, index)
        corpus_id[sid] = seg["id"]
        captions.append(
            Caption(
                object_id=oid,
                segment_id=sid,
                segment_index=index,
                source_uri=source_uri(obj),
                start_s=float(seg["start_s"]),
                end_s=float(seg["end_s"]),
                bucket=EVAL_BUCKET,
                key=obj,
                frame_pts=[float(seg["start_s"])],
                text=seg["caption"],
                model="corpus",
                backend="vllm",
                latency_s=0.0,
            )
        )
    return captions, corpus_id


async def publish(captions: list[Caption]) -> None:
    from workers.runtime.kafka import ensure_topics, make_producer
    from workers.stages import REGISTRY

    settings = CommonSettings()
    await ensure_topics(settings, REGISTRY.topics(settings))
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = [await producer.send(settings.topic_captions, c.to_bytes(), key=c.object_id.encode()) for c in captions]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def index_state(expected: int) -> tuple[int, int | None]:
    """(rows in the table, rows the full-text index does not cover yet or None without one)."""
    settings = IndexSettings()
    table = open_table(connect(settings), settings.index_table)
    if table is None:
        return 0, None
    fts = text_index(table)
    return int(table.count_rows()), None if fts is None else int(table.index_stats(fts.name).num_unindexed_rows)


async def run_pipeline(captions: list[Caption], timeout_s: float) -> float:
    """Publish the captions, run the embed and index stages until every segment is indexed
    (and covered by the full-text index); returns the seconds that took."""
    from workers.app import run_stages

    started = time.monotonic()
    await publish(captions)
    stop = asyncio.Event()
    stages = asyncio.create_task(run_stages(["embed", "index"], stop))
    try:
        while True:
            if stages.done():
                stages.result()  # raises what crashed the stages
                raise RuntimeError("the stages stopped before the index was complete")
            rows, unindexed = await asyncio.to_thread(index_state, len(captions))
            if rows >= len(captions) and unindexed == 0:
                break
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"index holds {rows}/{len(captions)} rows, FTS unindexed={unindexed}")
            await asyncio.sleep(1.0)
        return time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(stages, 120.0)


def score(ranked: list[str], relevant: tuple[str, ...]) -> dict[str, float]:
    rel = set(relevant)
    out = {f"r@{k}": len(rel & set(ranked[:k])) / len(rel) for k in CUTOFFS}
    out["mrr"] = next((1.0 / rank for rank, sid in enumerate(ranked[:10], start=1) if sid in rel), 0.0)
    return out


async def run_queries(corpus: Corpus, corpus_id: dict[str, str]) -> dict[str, list[dict[str, float]]]:
    """Every query in every mode through ``Searcher.search``; per mode, one score dict per query."""
    from workers.search.query import SearchQuery
    from workers.search.searcher import Searcher

    settings = SearchSettings()
    searcher = Searcher(settings)
    await searcher.start()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        for query in corpus.queries:
            for mode in MODES:
                res = await searcher.search(
                    SearchQuery(q=query.q, k=10, mode=mode, per_object=settings.search_per_object)
                )
                if res.mode != mode:
                    raise RuntimeError(f"mode {mode} ran as {res.mode}: {res.notice}")
                ranked = [corpus_id.get(h.segment_id, h.segment_id) for h in res.hits]
                results[mode].append({**score(ranked, query.relevant), "ms": res.took_ms})
    finally:
        await searcher.close()
    return results


def mean(scores: list[dict[str, float]], key: str) -> float:
    return statistics.fmean(s[key] for s in scores) if scores else 0.0


def report(corpus: Corpus, results: dict[str, list[dict[str, float]]]) -> list[str]:
    kinds = sorted({q.kind for q in corpus.queries})
    groups = [("all", list(range(len(corpus.queries))))]
    if len(kinds) > 1:
        groups += [(k, [i for i, q in enumerate(corpus.queries) if q.kind == k]) for k in kinds]
    lines = [f"{'queries':<16}{'mode':<8}{'recall@1':>9}{'recall@5':>9}{'recall@10':>10}{'MRR':>7}{'p50 ms':>8}"]
    for name, idx in groups:
        for mode in MODES:
            sel = [results[mode][i] for i in idx]
            lines.append(
                f"{f'{name} ({len(idx)})':<16}{mode:<8}{mean(sel, 'r@1'):>9.3f}{mean(sel, 'r@5'):>9.3f}"
                f"{mean(sel, 'r@10'):>10.3f}{mean(sel, 'mrr'):>7.3f}"
                f"{statistics.median(s['ms'] for s in sel) if sel else 0:>8.1f}"
            )
    r5 = {m: mean(results[m], "r@5") for m in MODES}
    best_single = max(r5["vector"], r5["text"])
    verdict = "at or above" if r5["hybrid"] >= best_single else "BELOW"
    lines.append(f"hybrid recall@5 is {verdict} the better single mode ({best_single:.3f})")
    lines.append(
        f"search_eval: segments={len(corpus.segments)} queries={len(corpus.queries)} "
        f"recall@5 hybrid={r5['hybrid']:.3f} vector={r5['vector']:.3f} text={r5['text']:.3f} "
        f"mrr hybrid={mean(results['hybrid'], 'mrr'):.3f}"
    )
    return lines


async def main_async(args: argparse.Namespace) -> int:
    from workers.localstack import start_stack, stop_stack
    from workers.offline_profile import offline_env

    corpus = load_corpus(args.corpus, args.limit)
    captions, corpus_id = to_captions(corpus.segments)
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-search-eval-"))
    ok = False
    try:
        endpoints = await asyncio.to_thread(start_stack, data_dir / "stack", s3_events=False)
        os.environ.update(
            {
                **endpoints.env(),
                **offline_env(),
                "CAPSTREAM_INDEX_URI": str(data_dir / "index"),
                "CAPSTREAM_SESSION_TIMEOUT_MS": "3000",
                # Fold every row into the full-text index soon (the default is every 300 s).
                "CAPSTREAM_INDEX_OPTIMIZE_INTERVAL_S": "2",
                "CAPSTREAM_INDEX_BATCH_AGE_S": "0.5",
            }
        )
        took = await run_pipeline(captions, args.timeout)
        print(f"indexed {len(captions)} segments through embed + index stages in {took:.1f}s", file=sys.stderr)
        results = await run_queries(corpus, corpus_id)
        for line in report(corpus, results):
            print(line)
        ok = True
    finally:
        await asyncio.to_thread(stop_stack, data_dir / "stack")
        if ok and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"search_eval: data and logs kept in {data_dir}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each kind (quick run)")
    parser.add_argument("--timeout", type=float, default=INDEX_TIMEOUT_S, help="bound on embedding + indexing")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data and logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    configure_logging("WARNING", "console")  # logs to stderr: stdout is the report
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # vLLM logs to stdout by default
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
