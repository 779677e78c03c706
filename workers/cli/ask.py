"""``capstream ask "QUESTION"``: an answer with the moments it cites, from the index and the
caption model (the same model and backend as the caption stage)."""

from __future__ import annotations

import sys

from workers.ask.answerer import Answerer
from workers.ask.protocol import Answer, AskRequest
from workers.cli.search import clock, stdout_to_stderr
from workers.runtime.continuous import engine_thread
from workers.search.searcher import Searcher
from workers.settings import SearchSettings


def format_answer(answer: Answer) -> str:
    lines = [answer.answer, ""]
    if answer.citations:
        lines.append("cited:")
        for m in answer.citations:
            where = f"page {m.page_number}" if m.page_number is not None else f"{clock(m.start_s)}-{clock(m.end_s)}"
            lines.append(f"  [{m.id}] {where}  {m.uri}")
    elif answer.moments:
        lines.append("cited: none (the retrieved moments do not hold the answer, as the model read them)")
    t = answer.timings
    lines.append(
        f"({len(answer.moments)} moments, retrieval {t.retrieval_ms:.0f} ms, model {t.model_ms:.0f} ms, "
        f"{t.visual_tokens if t.visual_tokens is not None else '?'} visual tokens)"
    )
    return "\n".join(lines)


async def cmd_ask(
    question: str, as_json: bool, k: int | None, object_id: str | None, bucket: str | None, prefix: str | None
) -> int:
    if not question.strip():
        sys.stderr.write("capstream ask: the question is empty\n")
        return 2
    settings = SearchSettings()
    request = AskRequest(question=question, k=k, object_id=object_id, bucket=bucket, prefix=prefix)
    executor = engine_thread("ask-engines")
    searcher = Searcher(settings, engine_executor=executor)
    answerer = Answerer(settings, searcher, executor)
    with stdout_to_stderr():  # vLLM logs to stdout; stdout is for the answer
        try:
            await searcher.start(embed=False)
            answer = await answerer.answer(request)
        finally:
            await answerer.close()
            await searcher.close()
            executor.shutdown(wait=False, cancel_futures=True)
    if answer.question_truncated:
        sys.stderr.write(f"capstream ask: question cut to {settings.ask_max_question_chars} characters\n")
    if answer.notice:
        sys.stderr.write(f"capstream ask: {answer.notice}\n")
    print(answer.model_dump_json(indent=2) if as_json else format_answer(answer))
    return 0
