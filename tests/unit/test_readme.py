"""The manual's configuration page and the README's first lines stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from workers.settings import SearchSettings
from workers.stages import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented() -> None:
    for model in (*REGISTRY.settings_classes(), SearchSettings):
        for name in model.model_fields:
            variable = f"CAPSTREAM_{name.upper()}"
            assert f"`{variable}`" in CONFIGURATION, f"docs/configuration.md lacks {variable}"


def test_first_lines_give_the_demo_and_test_commands() -> None:
    head = README.split("\n", 6)[:6]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_links_reach_pages_of_the_manual() -> None:
    """The README is the front door: each of its links into docs/ names a page of the site's nav
    (``mkdocs build --strict`` checks the links between pages, not the README's)."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r"\]\(docs/([^)#]+)", README)
    assert pages, "README links to no page of the manual"
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), f"README links to missing docs/{page}"
        assert re.search(rf":\s*{re.escape(page)}\s*$", nav, re.M), f"docs/{page} is not in mkdocs.yml's nav"
