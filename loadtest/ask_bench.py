"""``ask`` against the bare engine on the same prompts: what answering costs beyond the model.

    python -m loadtest.ask_bench [--questions 16] [--k 6] [--json FILE]

One process, the offline profile: the tiny random Qwen3-VL answers and the vLLM MiniLM embeds
(so the figures measure the cost around the model, not answer quality). A small index of
captioned moments with thumbnails is built in a temporary directory. For each question, in
alternating order:

- **ask**: ``Answerer.answer`` as ``capstream ask`` and ``POST /ask`` run it: retrieval
  (query embedding and hybrid search), the thumbnails read from the index, the prompt, the
  model behind the caption backend's continuous batcher, parsing;
- **bare**: ``vllm.LLM.generate`` on the same engine with the very request the ask side
  built (the caption backend's own rendering of the same messages and its structured
  sampling), so the same prompt, visual tokens, schema and budget.

Prefix caching is off for the run (``enable_prefix_caching: False``): both sides send the same
prompt, and a cache would make whichever went second cheap. The overhead is
(ask - bare) / bare per question, reported as median and p95 with each side's p50/p95;
goal <= 10 % of the model time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.bench_stats import percentile

QUESTIONS = [
    "What is the kitten doing?",
    "Where does the boat go?",
    "Who is cooking soup?",
    "What happens on the mountain?",
    "What do the traders look at?",
    "What was the revenue in the report?",
    "Is anyone asleep?",
    "What colour is the sofa?",
]
MOMENTS = [
    ("media/clips/cat.mp4", 0, "A small grey kitten plays with a ball of yarn on a sofa.", (90, 90, 90)),
    ("media/clips/cat.mp4", 1, "The kitten falls asleep on a blanket.", (120, 120, 160)),
    ("media/clips/harbour.mp4", 0, "A red sailing boat leaves the harbour at sunset.", (220, 60, 30)),
    ("media/clips/snow.mp4", 0, "Skiers race down a snowy mountain slope.", (240, 240, 250)),
    ("media/other/stock.mp4", 0, "Traders watch stock market charts on many screens.", (20, 120, 40)),
    ("media/long/kitchen.mp4", 0, "A chef chops onions and stirs a pot of soup in a kitchen.", (200, 80, 40)),
    ("media/long/kitchen.mp4", 1, "The chef tastes the soup and adds salt.", (190, 90, 50)),
    ("media/docs/report.mp4", 0, "A slide: revenue grew to 41 million euros in 2025.", (255, 255, 255)),
]


async def build_index(settings: Any, embed: Any) -> None:
    import uuid
    from datetime import UTC, datetime

    import lancedb
    import pyarrow as pa
    from PIL import Image

    from workers.decode.thumbnail import make_thumbnail
    from workers.index.table import row_schema

    vectors = [await embed.embed(caption) for _, _, caption, _ in MOMENTS]
    rows = []
    for (path, index, caption, colour), vector in zip(MOMENTS, vectors, strict=True):
        bucket, key = path.split("/", 1)
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{path}"))
        segment_id = str(uuid.uuid5(uuid.UUID(object_id), str(index)))
        rows.append(
            {
                "segment_id": segment_id,
                "embedding_id": segment_id,
                "object_id": object_id,
                "segment_index": index,
                "uri": f"s3://{path}",
                "bucket": bucket,
                "key": key,
                "version": None,
                "start_s": 5.0 * index,
                "end_s": 5.0 * index + 5.0,
                "caption": caption,
                "caption_model": "bench",
                "modality": "visual",
                "language": None,
                "page_number": None,
                "collection": "default",
                "embedding_model": settings.embed_model,
                "vector": vector,
                "thumbnail": make_thumbnail(Image.new("RGB", (320, 180), colour)),
                "indexed_at": datetime.now(UTC),
            }
        )
    db = lancedb.connect(settings.index_uri)
    table = db.create_table(settings.index_table, data=pa.Table.from_pylist(rows, schema=row_schema(len(vectors[0]))))
    table.create_fts_index("caption")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "p95": round(percentile(values, 95), 1)}


async def ask_side(answerer: Any, request: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = await answerer.answer(request)
    return (time.perf_counter() - started) * 1000, answer


async def bare_side(llm: Any, rendered: Any, sampling: Any, executor: Any) -> float:
    """``LLM.generate`` of the ask side's own request, on the engine thread."""

    def generate() -> float:
        started = time.perf_counter()
        llm.generate([rendered], sampling, use_tqdm=False)
        return (time.perf_counter() - started) * 1000

    result: float = await asyncio.get_running_loop().run_in_executor(executor, generate)
    return result


async def run(questions: int, k: int) -> dict[str, Any]:
    from workers.ask.answerer import Answerer
    from workers.ask.protocol import AskRequest
    from workers.runtime.continuous import engine_thread
    from workers.search.searcher import Searcher
    from workers.settings import SearchSettings

    settings = SearchSettings()
    executor = engine_thread("bench-engines")
    searcher = Searcher(settings, engine_executor=executor)
    await searcher.start()
    await build_index(settings, await searcher.embedder())  # the query engine embeds the captions too
    answerer = Answerer(settings, searcher, executor)
    rows: list[dict[str, float]] = []
    try:
        await answerer.answer(AskRequest(question="warm up", k=k))  # loads the caption engine
        model = await answerer._model()
        llm = model._llm  # type: ignore[attr-defined]  # the very engine the ask side uses
        for i in range(questions):
            question = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (take {i // len(QUESTIONS)})")
            request = AskRequest(question=question, k=k)
            _, _, moments = await answerer.retrieve(request, None)
            messages, _, _ = await answerer.prompt(question, moments)
            rendered, sampling = model._render(messages)  # type: ignore[attr-defined]

            if i % 2:
                bare_ms = await bare_side(llm, rendered, sampling, executor)
                ask_ms, answer = await ask_side(answerer, request)
            else:
                ask_ms, answer = await ask_side(answerer, request)
                bare_ms = await bare_side(llm, rendered, sampling, executor)
            rows.append(
                {
                    "ask_ms": ask_ms,
                    "bare_ms": bare_ms,
                    "retrieval_ms": answer.timings.retrieval_ms,
                    "model_ms": answer.timings.model_ms,
                    "visual_tokens": float(answer.timings.visual_tokens or 0),
                    "overhead": (ask_ms - bare_ms) / bare_ms,
                }
            )
    finally:
        await answerer.close()
        await searcher.close()
        executor.shutdown(wait=False, cancel_futures=True)
    overhead = [r["overhead"] for r in rows]
    return {
        "questions": questions,
        "k": k,
        "ask_ms": summary([r["ask_ms"] for r in rows]),
        "bare_ms": summary([r["bare_ms"] for r in rows]),
        "retrieval_ms": summary([r["retrieval_ms"] for r in rows]),
        "model_ms_in_ask": summary([r["model_ms"] for r in rows]),
        "visual_tokens": statistics.median(r["visual_tokens"] for r in rows),
        "overhead_median": round(statistics.median(overhead), 3),
        "overhead_p95": round(percentile(overhead, 95), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from workers.offline_profile import offline_env

    env = offline_env()
    engine_args = json.loads(env["CAPSTREAM_CAPTION_ENGINE_ARGS"]) | {"enable_prefix_caching": False}
    env["CAPSTREAM_CAPTION_ENGINE_ARGS"] = json.dumps(engine_args)
    workdir = tempfile.mkdtemp(prefix="ask-bench-")
    os.environ.update(
        env | {"CAPSTREAM_INDEX_URI": workdir, "CAPSTREAM_INDEX_TABLE": "segments", "CAPSTREAM_LOG_LEVEL": "WARNING"}
    )
    result = asyncio.run(run(args.questions, args.k))
    line = (
        f"ask p50 {result['ask_ms']['p50']} ms (p95 {result['ask_ms']['p95']}), bare engine p50 "
        f"{result['bare_ms']['p50']} ms (p95 {result['bare_ms']['p95']}), "
        f"retrieval p50 {result['retrieval_ms']['p50']} ms; "
        f"overhead median {result['overhead_median']:.1%} (p95 {result['overhead_p95']:.1%}) of the model time "
        f"(goal <= 10%), {result['visual_tokens']:.0f} visual tokens"
    )
    print(json.dumps(result, indent=2))
    print(line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
