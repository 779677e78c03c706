"""tests/unit is pure logic unless a test says otherwise: a test here that starts a child
process (the CLI run as a user runs it, podman-compose, a redis-server) or opens a LanceDB
database carries a marker (``impure``, or ``integration`` for a service), so that
``pytest tests/unit -m "not impure and not integration"`` runs the logic alone.

The rule is enforced where it is broken: while an unmarked test (and the fixtures it sets up)
runs, starting a process or connecting to LanceDB fails the test. Real models have no hook:
here they come with LanceDB (the search tests embed with MiniLM to fill a table), and the one
test that loads MiniLM's tokenizer alone is marked by hand.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import NoReturn

import lancedb
import pytest

MARKERS = ("impure", "integration", "e2e")


def _refused(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(f"this tests/unit test {what} but is not marked: add @pytest.mark.impure")

    return refuse


@contextmanager
def _pure_unless_marked(item: pytest.Item) -> Iterator[None]:
    if any(item.get_closest_marker(name) for name in MARKERS):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", _refused("starts a child process"))
        patch.setattr(os, "fork", _refused("forks"))
        patch.setattr(lancedb, "connect", _refused("opens a LanceDB database"))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _pure_unless_marked(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _pure_unless_marked(item):
        return (yield)
