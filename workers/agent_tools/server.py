"""Agent tools: an MCP server (the ``mcp`` SDK's ``MCPServer``) exposing search and object status.

It is a client of ``capstream serve`` (``workers.client``), not a second way into the index: an
agent's calls carry the API key the server was started with, so they see exactly what that key
sees (its collections; another collection's object is "not found", as over HTTP), are counted by
its rate limit, and stop working when the key is revoked. ``capstream mcp`` runs it over stdio,
the transport agent hosts launch; the key comes from ``CAPSTREAM_API_KEY`` (an environment
variable, never an argument that ``ps`` would show).
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from workers.client import AsyncCapstreamClient, CapstreamError, NotFound

INSTRUCTIONS = (
    "Search indexed videos, images and documents by meaning or words: each hit is a moment "
    "(object, start/end seconds, what is shown or said). Use object_status for an object's progress."
)


def build_server(client: AsyncCapstreamClient) -> MCPServer:
    server: MCPServer = MCPServer("capstream", instructions=INSTRUCTIONS)

    @server.tool()
    async def search(
        query: str,
        k: int = 10,
        mode: Literal["hybrid", "vector", "text"] = "hybrid",
        modality: Literal["visual", "speech", "page"] | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Find moments in the indexed media: the best k hits, each with object_id, uri, start_s,
        end_s, what is shown or said (caption; modality says which), score and a media_url that
        opens the media at that moment."""
        try:
            page = await client.search(query, k=k, mode=mode, modality=modality, bucket=bucket, prefix=prefix)
        except CapstreamError as exc:
            raise ToolError(f"search failed: {exc}") from None
        return [
            hit.model_dump(
                mode="json",
                include={"object_id", "segment_id", "uri", "start_s", "end_s", "caption", "modality", "score"},
            )
            | {"media_url": hit.media_url}
            for hit in page.hits
        ]

    @server.tool()
    async def object_status(object_id: str) -> dict[str, Any]:
        """An object's progress (state, segments done per stage) and its indexed moments."""
        try:
            info = await client.object(object_id)
        except NotFound:
            raise ToolError(f"no object {object_id}") from None
        except CapstreamError as exc:
            raise ToolError(f"object_status failed: {exc}") from None
        return info.model_dump(mode="json")

    @server.tool()
    async def ask(question: str, k: int = 8, object_id: str | None = None) -> dict[str, Any]:
        """Answer a question from the indexed media: the answer, whether the moments held it
        (found), and the moments it cites, each with its time (or page) and a media_url that
        opens it there. A citation is always one of the moments that were retrieved."""
        try:
            answer = await client.ask(question, k=k, object_id=object_id)
        except NotFound:
            raise ToolError(f"no object {object_id}") from None
        except CapstreamError as exc:
            raise ToolError(f"ask failed: {exc}") from None
        return answer.model_dump(mode="json", exclude={"moments"})

    return server


def run_stdio(url: str, api_key: str | None) -> None:
    """Serve the tools over stdio until the agent host closes the pipe."""
    import anyio

    async def main() -> None:
        async with AsyncCapstreamClient(url, api_key, timeout=120.0) as client:
            await build_server(client).run_stdio_async()

    anyio.run(main)
