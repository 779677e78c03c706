"""Background processes of the local stack: spawn, liveness, signals, waiting, stopping.

Every process starts detached (its own session / process group) so it survives the Ctrl-C of
the process that started it, and ``killpg`` stops everything it forked. Its output goes to a
log file whose tail ends up in the error when it dies or never gets ready.

Liveness has two readers, and both must agree:

- the process that spawned it: a daemon reaper thread waits on each child, so a child that
  exits never lingers as a zombie, its ``Popen`` is never dropped while running (no
  ``ResourceWarning``), and its exit code lands on :class:`ManagedProcess` for the startup
  error message;
- any other process (``capstream up`` exits and leaves the stack running; a later command
  reads ``stack.json``): it knows only the pid, so liveness asks psutil. A zombie counts as
  dead, and an expected process name guards against a pid the kernel has handed to someone else.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import psutil
import structlog
from pydantic import BaseModel, Field, PrivateAttr

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"


class StackError(RuntimeError):
    """The local stack could not be started (message carries the failing log's tail)."""


class ManagedProcess(BaseModel):
    """One background process of the stack."""

    service: str
    pid: int
    argv: list[str]
    log_path: str
    ports: dict[str, int] = Field(default_factory=dict)

    # Set by spawn() in the process that started it; absent for a record built from stack.json.
    _reaper: threading.Thread | None = PrivateAttr(default=None)
    _exit_code: int | None = PrivateAttr(default=None)

    @property
    def exit_code(self) -> int | None:
        """The exit code once this process (started here) has exited and been reaped."""
        return self._exit_code

    def wait_reaped(self, timeout: float) -> int | None:
        """Give the reaper thread up to ``timeout`` s to record the exit code; None if unknown."""
        if self._reaper is not None:
            self._reaper.join(timeout)
        return self._exit_code

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        def reap() -> None:
            self._exit_code = proc.wait()

        self._reaper = threading.Thread(target=reap, name=f"reap-{self.service}-{self.pid}", daemon=True)
        self._reaper.start()


# --------------------------------------------------------------------------------------------
# ports


def port_is_free(port: int, host: str = HOST) -> bool:
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST, *, exclude: Iterable[int] = ()) -> int:
    """A TCP port on ``host`` that nothing listens on right now (and not in ``exclude``)."""
    excluded = set(exclude)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in excluded:
            return port
    raise StackError("could not find a free TCP port")


# --------------------------------------------------------------------------------------------
# spawning


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def log_tail(path: Path | str, max_bytes: int = 6000, max_lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<no log: {exc}>"
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without AWS_* (so no stray profile/token leaks in) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


def spawn(
    service: str,
    argv: list[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ports: Mapping[str, int] | None = None,
) -> ManagedProcess:
    """Start ``argv`` detached, appending its output to ``log_path``; a reaper thread waits on it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n=== {_now()} capstream localstack starting: {shlex.join(argv)}\n".encode())
        log_file.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # own process group: survives our Ctrl-C, killpg stops all of it
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {service}: {shlex.join(argv)}: {exc}") from exc
    managed = ManagedProcess(service=service, pid=proc.pid, argv=argv, log_path=str(log_path), ports=dict(ports or {}))
    managed._watch(proc)
    log.info("localstack.process_started", service=service, pid=proc.pid, log=str(log_path), ports=ports)
    return managed


# --------------------------------------------------------------------------------------------
# liveness


def is_process_alive(pid: int, expected_name: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, its name matches (guards pid reuse).

    The kernel's process name is truncated to 15 characters, so ``expected_name`` only has
    to start with it.
    """
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        if expected_name is not None:
            name = proc.name()
            if name and not expected_name.startswith(name):
                return False
    except psutil.NoSuchProcess:  # includes psutil.ZombieProcess
        return False
    except psutil.AccessDenied:  # someone else's process holds the pid: it exists
        return True
    return True


def check_alive(process: ManagedProcess | None) -> None:
    """Raise :class:`StackError` with the exit code and log tail if ``process`` has exited."""
    if process is None:
        return
    if process.exit_code is None and is_process_alive(process.pid):
        return
    code = process.wait_reaped(1.0)  # a zombie is dead already; its reaper may be a moment behind
    raise StackError(
        f"{process.service} ({Path(process.argv[0]).name}, pid {process.pid}) exited"
        f" (code {code}) during startup; tail of {process.log_path}:\n{log_tail(process.log_path)}"
    )


# --------------------------------------------------------------------------------------------
# signals and stopping


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (or to ``pid`` alone if it leads none)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_dead(pids: Mapping[int, str | None], timeout: float) -> set[int]:
    """Wait until every pid (-> expected name) is gone; returns the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = {pid for pid, name in pids.items() if is_process_alive(pid, name)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if is_process_alive(pid, pids[pid])}
    return alive


def stop_pids(pids: Mapping[int, str | None], timeout: float = 10.0) -> bool:
    """SIGTERM each process group, wait ``timeout``, SIGKILL leftovers. True if any was running."""
    running = {pid: name for pid, name in pids.items() if is_process_alive(pid, name)}
    if not running:
        return False
    for pid in running:
        signal_group(pid, signal.SIGTERM)
    leftovers = wait_dead(running, timeout)
    for pid in leftovers:
        log.warning("localstack.sigkill", pid=pid, name=running[pid])
        signal_group(pid, signal.SIGKILL)
    if leftovers and wait_dead({pid: running[pid] for pid in leftovers}, 5.0):
        log.error("localstack.unkillable", pids=sorted(leftovers))
    return True
