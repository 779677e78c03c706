"""Kill and restart single services of a recorded stack, on the ports it recorded.

Chaos tests kill a service (``kill_service``, ``kill_broker``) while workers run and start it
again (``start_service``, ``start_broker``, ``restart_redis``); ``capstream up`` revives the
stopped services of a stack that is partly down (``revive_stack``). Every restart keeps the
service's ports, so clients configured for the stack keep working, and rewrites
``stack.json`` with the new pid.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import cast

import structlog

from workers.localstack.processes import StackError, is_process_alive, signal_group, wait_dead
from workers.localstack.services import SERVICES, Service, expected_name, remove_weed_sockets, stop_process
from workers.localstack.stack import (
    READY_ORDER,
    StackEndpoints,
    launch_service,
    recorded_stack,
    wait_service_ready,
    write_stack,
)

log = structlog.get_logger(__name__)


def revive_stack(data_dir: Path, *, timeout: float = 60.0) -> StackEndpoints | None:
    """Restart the stopped services of the recorded stack on their recorded ports, so every
    client configured for it keeps working. None if there is no recorded stack."""
    endpoints, stopped = recorded_stack(data_dir)
    if endpoints is None:
        return None
    # Storage before the broker: a durable broker keeps its log in SeaweedFS.
    for service in sorted(stopped, key=lambda s: READY_ORDER.index(cast(Service, s)) if s in SERVICES else 9):
        endpoints = start_service(endpoints, cast(Service, service), timeout=timeout)
    return endpoints


def kill_service(
    endpoints: StackEndpoints,
    service: Service,
    *,
    sig: signal.Signals = signal.SIGKILL,
    timeout: float = 10.0,
) -> bool:
    """Send ``sig`` to one service's process group and wait until it is gone. True if it was running."""
    pid = endpoints.pids[service]
    name = expected_name(service)
    if not is_process_alive(pid, name):
        return False
    signal_group(pid, sig)
    if wait_dead({pid: name}, timeout):
        signal_group(pid, signal.SIGKILL)
        wait_dead({pid: name}, 5.0)
    if service == "s3":
        remove_weed_sockets(endpoints.weed_ports().values())
    log.info("localstack.service_killed", service=service, pid=pid, signal=sig.name)
    return True


def start_service(endpoints: StackEndpoints, service: Service, *, timeout: float = 60.0) -> StackEndpoints:
    """(Re)start one service on its recorded port(s), wait for it, update stack.json.

    Returns the updated endpoints (new pid). The service must not be running.
    """
    if is_process_alive(endpoints.pids.get(service, -1), expected_name(service)):
        raise StackError(f"{service} is still running (pid {endpoints.pids[service]})")
    proc = launch_service(endpoints, service)
    try:
        wait_service_ready(endpoints, service, proc, timeout)
    except BaseException:
        stop_process(proc, timeout=5.0)
        raise
    updated = endpoints.model_copy(update={"pids": {**endpoints.pids, service: proc.pid}})
    write_stack(updated)
    log.info("localstack.service_started", service=service, pid=proc.pid)
    return updated


def kill_broker(endpoints: StackEndpoints, *, graceful: bool = False) -> bool:
    """Kill the broker (SIGKILL, or SIGTERM when ``graceful``)."""
    return kill_service(endpoints, "kafka", sig=signal.SIGTERM if graceful else signal.SIGKILL)


def start_broker(endpoints: StackEndpoints, *, timeout: float = 30.0) -> StackEndpoints:
    """Start the broker again on the same port and storage engine; returns updated endpoints."""
    return start_service(endpoints, "kafka", timeout=timeout)


def restart_redis(endpoints: StackEndpoints, *, graceful: bool = False, timeout: float = 20.0) -> StackEndpoints:
    """Kill Redis and start it again on the same port. It replays its append-only file, so
    claims and progress survive (after SIGKILL, up to the last second's writes may be lost)."""
    kill_service(endpoints, "redis", sig=signal.SIGTERM if graceful else signal.SIGKILL)
    return start_service(endpoints, "redis", timeout=timeout)
