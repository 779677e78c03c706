"""The README's configuration section and first lines stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from workers.settings import (
    BridgeSettings,
    CaptionSettings,
    DecodeSettings,
    EmbedSettings,
    IndexSettings,
    SearchSettings,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for model in (DecodeSettings, CaptionSettings, EmbedSettings, BridgeSettings, IndexSettings, SearchSettings):
        for name in model.model_fields:
            assert f"`CAPSTREAM_{name.upper()}`" in README, f"README lacks CAPSTREAM_{name.upper()}"


def test_first_lines_give_the_demo_and_test_commands() -> None:
    head = README.split("\n", 6)[:6]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci
