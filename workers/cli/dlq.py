"""``capstream dlq list|show|replay``: inspect dead letters and re-inject them after a fix
(``workers.state.dead_letter_log`` reads and replays them)."""

from __future__ import annotations

import json
import sys
from typing import Any

from workers.settings import CommonSettings
from workers.state.dead_letter_log import StoredLetter, read_letters, replay_letters, select_letters


def _summary(s: StoredLetter) -> dict[str, Any]:
    d = s.letter.model_dump(mode="json", exclude={"payload"})
    return {"ref": s.ref, **d, "payload_bytes": len(s.letter.payload)}


def _skipped(stored: StoredLetter, why: str) -> None:
    sys.stderr.write(f"capstream: {stored.ref} has {why}\n")


async def cmd_dlq(action: str, refs: list[str], stage: str | None, reason: str | None, as_json: bool) -> int:
    settings = CommonSettings()
    letters = select_letters(await read_letters(settings), refs, stage, reason)
    if action == "list":
        if as_json:
            print(json.dumps([_summary(s) for s in letters], indent=2))
        for s in [] if as_json else letters:
            lt = s.letter
            print(f"{s.ref}  {lt.stage:<9} {lt.reason:<20} object={lt.object_id}  {lt.message[:80]}")
        return 0
    if action == "show":
        if not refs or not letters:
            sys.stderr.write("capstream: dlq show needs existing refs (see `capstream dlq list`)\n")
            return 1
        for s in letters:
            payload = s.letter.payload.decode(errors="replace")
            print(
                json.dumps(
                    {**_summary(s), "payload": payload if len(payload) < 4000 else payload[:4000] + "..."}, indent=2
                )
            )
        return 0
    if not refs and not (stage or reason):
        sys.stderr.write("capstream: dlq replay needs refs, --stage or --reason (refusing to replay everything)\n")
        return 2
    count = await replay_letters(settings, letters, _skipped)
    print(f"replayed {count} dead letter(s)")
    return 0
