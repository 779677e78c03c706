"""A real local stack for tests and the offline demo: Tansu (Kafka protocol), Redis, SeaweedFS (S3).

Every service is a detached background process (see ``processes``) bound to 127.0.0.1 on free
ports, logging to ``data_dir/logs/<binary>.log``. ``data_dir/stack.json`` records the endpoints,
ports and pids so another process (the CLI, a later test) can find, restart or stop it; it holds
the S3 secret, so it is written owner-only.

Startup order: SeaweedFS and Redis start together; the broker starts at once with the memory
engine, or - with ``durable_kafka=True`` - after the S3 bucket ``<bucket>-kafka`` exists, since
Tansu's ``s3://`` engine keeps topics, messages and committed offsets there.

S3 events (``s3_events=True``, the default with the memory engine): SeaweedFS's filer publishes
every change to the topic ``FILER_EVENTS_TOPIC`` (``notification.toml`` in its working
directory), and ``capstream run`` bridges those into S3 ObjectCreated events. weed exits at
start when that broker is unreachable, so the broker starts and answers first. The durable
engine stores the broker in SeaweedFS itself - a cycle - so durable stacks have no S3 events.

Each service starts from its recorded facts in one place (``launch_service``), whether the
whole stack starts or one service restarts (``control``: chaos tests, ``capstream up`` reviving a
partly stopped stack).
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, Field

from workers.localstack.processes import (
    HOST,
    ManagedProcess,
    StackError,
    free_port,
    is_process_alive,
    stop_pids,
)
from workers.localstack.readiness import wait_for_kafka, wait_for_redis, wait_for_s3
from workers.localstack.services import (
    FILER_EVENTS_TOPIC,
    GRPC_OFFSET,
    MEMORY_ENGINE,
    REGION,
    Service,
    configure_filer_events,
    expected_name,
    free_port_pair,
    remove_weed_sockets,
    service_log_path,
    start_redis,
    start_seaweedfs,
    start_tansu,
    stop_process,
    weed_ports,
)

log = structlog.get_logger(__name__)

STACK_FILE = "stack.json"
CREDENTIALS_FILE = "s3-credentials.json"

# Stop order: the broker first (with the s3 engine it flushes to SeaweedFS), SeaweedFS last.
_STOP_ORDER: tuple[str, ...] = ("kafka", "redis", "s3")
# Readiness order, storage first: a durable broker keeps its log in SeaweedFS.
READY_ORDER: tuple[Service, ...] = ("s3", "redis", "kafka")


class StackEndpoints(BaseModel):
    """Where the running stack listens; persisted as ``data_dir/stack.json``."""

    kafka_bootstrap: str
    redis_url: str
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str
    bucket: str
    data_dir: str
    pids: dict[str, int]
    # Extra facts needed to restart a single service exactly as it was.
    ports: dict[str, int] = Field(default_factory=dict)
    kafka_storage_engine: str = MEMORY_ENGINE
    filer_events_topic: str | None = Field(default=None, description="set when SeaweedFS publishes filer events")

    def env(self) -> dict[str, str]:
        """Environment variables the workers read to reach this stack."""
        env = {
            "CAPSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "CAPSTREAM_REDIS_URL": self.redis_url,
            "CAPSTREAM_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "CAPSTREAM_S3_BUCKET": self.bucket,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            # The search index lives with the stack's data unless told otherwise.
            "CAPSTREAM_INDEX_URI": str(Path(self.data_dir) / "index"),
        }
        if self.filer_events_topic:
            env["CAPSTREAM_TOPIC_FILER_EVENTS"] = self.filer_events_topic
            env["CAPSTREAM_S3_EVENTS_BRIDGE"] = "true"
        return env

    @property
    def durable_kafka(self) -> bool:
        return not self.kafka_storage_engine.startswith("memory://")

    def log_path(self, service: Service) -> Path:
        return service_log_path(Path(self.data_dir), service)

    def weed_ports(self) -> dict[str, int]:
        return {k.removeprefix("weed."): v for k, v in self.ports.items() if k.startswith("weed.")}


# --------------------------------------------------------------------------------------------
# one service, from the recorded facts


def launch_service(endpoints: StackEndpoints, service: Service) -> ManagedProcess:
    """Spawn ``service`` exactly as ``endpoints`` records it (does not wait for readiness)."""
    data_dir = Path(endpoints.data_dir)
    if service == "kafka":
        return start_tansu(
            data_dir,
            endpoints.ports.get("kafka") or int(endpoints.kafka_bootstrap.rpartition(":")[2]),
            storage_engine=endpoints.kafka_storage_engine,
            s3_endpoint_url=endpoints.s3_endpoint_url,
            s3_access_key=endpoints.s3_access_key,
            s3_secret_key=endpoints.s3_secret_key,
        )
    if service == "redis":
        return start_redis(data_dir, endpoints.ports.get("redis") or int(urlsplit(endpoints.redis_url).port or 6379))
    return start_seaweedfs(
        data_dir,
        int(urlsplit(endpoints.s3_endpoint_url).port or 0),
        access_key=endpoints.s3_access_key,
        secret_key=endpoints.s3_secret_key,
        ports=endpoints.weed_ports() or None,
    )


def wait_service_ready(endpoints: StackEndpoints, service: Service, process: ManagedProcess, timeout: float) -> None:
    if service == "kafka":
        wait_for_kafka(endpoints.kafka_bootstrap, timeout=timeout, process=process)
    elif service == "redis":
        wait_for_redis(endpoints.redis_url, timeout=timeout, process=process)
    else:
        buckets = [endpoints.bucket]
        if endpoints.kafka_storage_engine.startswith("s3://"):
            buckets.append(endpoints.kafka_storage_engine.removeprefix("s3://").strip("/"))
        wait_for_s3(
            endpoints.s3_endpoint_url,
            endpoints.s3_access_key,
            endpoints.s3_secret_key,
            buckets,
            timeout=timeout,
            process=process,
        )


# --------------------------------------------------------------------------------------------
# the stack file


def _stack_file(data_dir: Path) -> Path:
    return Path(data_dir) / STACK_FILE


def write_stack(endpoints: StackEndpoints) -> None:
    path = _stack_file(Path(endpoints.data_dir))
    tmp = path.with_suffix(".json.tmp")
    tmp.unlink(missing_ok=True)
    # The file holds the S3 secret: owner-only from the first byte, whatever the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(endpoints.model_dump_json(indent=2) + "\n")
    tmp.replace(path)


def _load_stack_file(data_dir: Path) -> StackEndpoints | None:
    path = _stack_file(data_dir)
    try:
        return StackEndpoints.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.warning("localstack.bad_stack_file", path=str(path), error=str(exc))
        return None


def _load_or_create_credentials(data_dir: Path) -> tuple[str, str]:
    """S3 keys generated once per data_dir and reused, so a restarted stack keeps its identity."""
    path = Path(data_dir) / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
        return str(data["access_key"]), str(data["secret_key"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    alphabet = string.ascii_uppercase + string.digits
    access_key = "CAPSTREAM" + "".join(secrets.choice(alphabet) for _ in range(11))
    secret_key = secrets.token_urlsafe(30)[:40]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"access_key": access_key, "secret_key": secret_key}, fh)
    return access_key, secret_key


def read_stack(data_dir: Path) -> StackEndpoints | None:
    """The running stack of ``data_dir``; None if there is no stack.json or any of its processes is dead."""
    endpoints, stopped = recorded_stack(data_dir)
    return endpoints if endpoints is not None and endpoints.pids and not stopped else None


def recorded_stack(data_dir: Path) -> tuple[StackEndpoints | None, list[str]]:
    """The stack recorded in ``data_dir/stack.json`` (None without one) and which of its
    services are no longer running."""
    endpoints = _load_stack_file(Path(data_dir))
    if endpoints is None:
        return None, []
    stopped = [s for s, pid in endpoints.pids.items() if not is_process_alive(pid, expected_name(s))]
    return endpoints, stopped


# --------------------------------------------------------------------------------------------
# the whole stack


def start_stack(
    data_dir: Path,
    *,
    bucket: str = "media",
    kafka_port: int | None = None,
    redis_port: int | None = None,
    s3_port: int | None = None,
    durable_kafka: bool = False,
    s3_events: bool = True,
    timeout: float = 60.0,
) -> StackEndpoints:
    """Start broker, Redis and SeaweedFS for ``data_dir``, wait until all are ready, write stack.json.

    ``s3_events``: SeaweedFS publishes filer events to the broker (ignored with ``durable_kafka``,
    see the module docstring).

    Raises :class:`StackError` (after stopping whatever it started) if anything fails, or if
    a stack is already running in ``data_dir``.
    """
    t0 = time.monotonic()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = read_stack(data_dir)
    if running is not None:
        raise StackError(f"a stack is already running in {data_dir} (pids {running.pids}); stop_stack() it first")
    if _stack_file(data_dir).exists():
        log.warning("localstack.stale_stack_file", data_dir=str(data_dir))
        stop_stack(data_dir)

    access_key, secret_key = _load_or_create_credentials(data_dir)
    reserved: set[int] = set()
    if kafka_port is None:
        kafka_port = free_port(exclude=reserved)
    reserved.add(kafka_port)
    if redis_port is None:
        redis_port = free_port(exclude=reserved)
    reserved.add(redis_port)
    given_weed_ports: dict[str, int] | None = None
    if s3_port is None:
        s3_port = free_port_pair(reserved)
        given_weed_ports = {"s3": s3_port, "s3.grpc": s3_port + GRPC_OFFSET}
    reserved.add(s3_port)
    all_weed_ports = weed_ports(s3_port, reserved, given_weed_ports)

    bootstrap = f"{HOST}:{kafka_port}"
    filer_topic = FILER_EVENTS_TOPIC if s3_events and not durable_kafka else None
    if s3_events and durable_kafka:
        log.warning("localstack.s3_events_off", reason="the durable broker lives in SeaweedFS itself")
    configure_filer_events(data_dir / "s3", bootstrap if filer_topic else None)
    ports: dict[str, int] = {"kafka": kafka_port, "redis": redis_port}
    ports.update({f"weed.{name}": port for name, port in all_weed_ports.items()})
    endpoints = StackEndpoints(
        kafka_bootstrap=bootstrap,
        redis_url=f"redis://{HOST}:{redis_port}/0",
        s3_endpoint_url=f"http://{HOST}:{s3_port}",
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        bucket=bucket,
        data_dir=str(data_dir),
        pids={},
        ports=ports,
        kafka_storage_engine=f"s3://{bucket}-kafka/" if durable_kafka else MEMORY_ENGINE,
        filer_events_topic=filer_topic,
    )

    # service -> the service that must answer before it starts (see the module docstring)
    after: dict[Service, Service] = {"kafka": "s3"} if durable_kafka else {"s3": "kafka"} if filer_topic else {}
    order: tuple[Service, ...] = ("s3", "redis", "kafka") if durable_kafka else ("kafka", "s3", "redis")
    started: dict[Service, ManagedProcess] = {}
    ready: set[Service] = set()

    def wait(service: Service) -> None:
        if service not in ready:
            wait_service_ready(endpoints, service, started[service], timeout)
            ready.add(service)

    try:
        for service in order:
            if service in after:
                wait(after[service])
            started[service] = launch_service(endpoints, service)
        for service in READY_ORDER:
            wait(service)
    except BaseException as exc:
        log.error(
            "localstack.start_failed",
            data_dir=str(data_dir),
            error=str(exc).splitlines()[0] if str(exc) else "",
        )
        for process in reversed(started.values()):
            stop_process(process, timeout=5.0)
        if isinstance(exc, Exception) and not isinstance(exc, StackError):
            raise StackError(f"starting the local stack failed: {exc!r}") from exc
        raise

    endpoints = endpoints.model_copy(update={"pids": {s: started[s].pid for s in ("kafka", "redis", "s3")}})
    write_stack(endpoints)
    log.info(
        "localstack.started",
        data_dir=str(data_dir),
        seconds=round(time.monotonic() - t0, 2),
        kafka=bootstrap,
        redis=endpoints.redis_url,
        s3=endpoints.s3_endpoint_url,
        kafka_storage=endpoints.kafka_storage_engine,
    )
    return endpoints


def stop_stack(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the stack recorded in ``data_dir/stack.json`` and remove that file.

    SIGTERM to each process group (broker first), up to ``timeout`` s each step, then SIGKILL.
    Returns False if nothing was running.
    """
    data_dir = Path(data_dir)
    endpoints = _load_stack_file(data_dir)
    if endpoints is None:
        _stack_file(data_dir).unlink(missing_ok=True)
        return False
    any_running = False
    order = [s for s in _STOP_ORDER if s in endpoints.pids] + [s for s in endpoints.pids if s not in _STOP_ORDER]
    # Broker alone first (it may flush to S3), then the rest together.
    first, rest = order[:1], order[1:]
    for group in (first, rest):
        pids = {endpoints.pids[s]: expected_name(s) for s in group}
        if pids and stop_pids(pids, timeout):
            any_running = True
    remove_weed_sockets(endpoints.weed_ports().values())
    _stack_file(data_dir).unlink(missing_ok=True)
    log.info("localstack.stopped", data_dir=str(data_dir), was_running=any_running)
    return any_running
