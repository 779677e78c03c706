"""``capstream mcp`` (agent tools over MCP, stdio) against a live ``capstream serve``: an agent
host launches it with a key and sees what that key sees, no more."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.search_fixtures import COLLECTIONS
from tests.serve_process import CAT, ROOT, STOCK, Server, running_serve
from workers.localstack import StackEndpoints

pytestmark = pytest.mark.e2e  # a live serve with the real vLLM MiniLM engine


@pytest.fixture(scope="module")
def server(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_serve(stack, tmp_path_factory.mktemp("mcp-serve"), {}) as server:
        yield server


def _agent(server: Server, who: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSTREAM_")}
    env |= {"CAPSTREAM_API_KEY": server.tokens[who], "CAPSTREAM_LOG_LEVEL": "WARNING"}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "workers.cli.main", "mcp", "--url", server.url], env=env, cwd=str(ROOT)
    )


async def _session(server: Server, who: str) -> dict[str, object]:
    async with Client(_agent(server, who), read_timeout_seconds=120) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        search = await client.call_tool("search", {"query": "a kitten playing with yarn on a sofa", "k": 20})
        own = await client.call_tool("object_status", {"object_id": CAT.object_id})
        other = await client.call_tool("object_status", {"object_id": STOCK.object_id})
        ask = await client.call_tool("ask", {"question": "What is the kitten doing?", "k": 3})
        return {"tools": tools, "search": search, "own": own, "other": other, "ask": ask}


def test_tools_see_only_the_keys_collections(server: Server) -> None:
    seen = anyio.run(_session, server, "clips")
    assert seen["tools"] == ["ask", "object_status", "search"]
    search, own, other = seen["search"], seen["own"], seen["other"]
    assert not search.is_error  # type: ignore[attr-defined]
    hits = search.structured_content["result"]  # type: ignore[attr-defined]
    assert hits and hits[0]["segment_id"] == CAT.segment_id
    assert {COLLECTIONS.of("media", h["uri"].removeprefix("s3://media/")) for h in hits} == {"clips"}
    assert not own.is_error and own.structured_content["object_id"] == CAT.object_id  # type: ignore[attr-defined]
    assert other.is_error and "no object" in other.content[0].text  # type: ignore[attr-defined]
    answer = seen["ask"].structured_content  # type: ignore[attr-defined]
    assert not seen["ask"].is_error and answer["answer"]  # type: ignore[attr-defined]
    assert all(COLLECTIONS.of("media", c["uri"].removeprefix("s3://media/")) == "clips" for c in answer["citations"])


def test_a_revoked_key_gets_an_error_not_results(server: Server) -> None:
    seen = anyio.run(_session, server, "revoked")
    assert seen["search"].is_error and "401" in seen["search"].content[0].text  # type: ignore[attr-defined]
