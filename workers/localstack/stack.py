"""A real local stack for tests and the offline demo: Tansu (Kafka protocol), Redis, SeaweedFS (S3).

Every service is a detached background process (its own session / process group) bound to
127.0.0.1 on free ports, logging to ``data_dir/logs/<binary>.log``. ``data_dir/stack.json``
records the endpoints and pids so another process (the CLI, a later test) can find or stop it.

Startup order: SeaweedFS and Redis start together; the broker starts at once with the memory
engine, or - with ``durable_kafka=True`` - after the S3 bucket ``<bucket>-kafka`` exists, since
Tansu's ``s3://`` engine keeps topics, messages and committed offsets there.

S3 events (``s3_events=True``, the default with the memory engine): SeaweedFS's filer publishes
every change to the topic ``FILER_EVENTS_TOPIC`` (``notification.toml`` in its working
directory), and ``capstream run`` bridges those into S3 ObjectCreated events. weed exits at
start when that broker is unreachable, so the broker starts and answers first. The durable
engine stores the broker in SeaweedFS itself - a cycle - so durable stacks have no S3 events.

Readiness is checked synchronously (raw Kafka Metadata request, Redis PING, botocore
CreateBucket), so these functions can be called from sync code and from inside a running
event loop alike.

Each service has its own start/kill helpers (``start_service``/``kill_service``,
``kill_broker``/``start_broker``/``restart_redis``) for chaos tests.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shlex
import signal
import socket
import string
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, Field

from workers.localstack.binaries import BinaryNotFoundError, find_redis_server, find_tansu, find_weed

__all__ = [
    "FILER_EVENTS_TOPIC",
    "HOST",
    "MEMORY_ENGINE",
    "ManagedProcess",
    "Service",
    "StackEndpoints",
    "StackError",
    "configure_filer_events",
    "free_port",
    "is_process_alive",
    "kafka_metadata_brokers",
    "kill_broker",
    "kill_service",
    "read_stack",
    "restart_redis",
    "start_broker",
    "start_redis",
    "start_seaweedfs",
    "start_service",
    "start_stack",
    "start_tansu",
    "stop_process",
    "stop_stack",
    "wait_for_kafka",
    "wait_for_redis",
    "wait_for_s3",
]

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
MEMORY_ENGINE = "memory://tansu/"
REGION = "us-east-1"
STACK_FILE = "stack.json"
FILER_EVENTS_TOPIC = "seaweedfs.filer"
NOTIFICATION_FILE = "notification.toml"
CREDENTIALS_FILE = "s3-credentials.json"

Service = Literal["kafka", "redis", "s3"]
# service -> (process name in /proc/<pid>/comm, log file name)
_SERVICES: dict[str, tuple[str, str]] = {
    "kafka": ("tansu", "tansu.log"),
    "redis": ("redis-server", "redis.log"),
    "s3": ("weed", "seaweedfs.log"),
}
# Stop order: the broker first (with the s3 engine it flushes to SeaweedFS), SeaweedFS last.
_STOP_ORDER: tuple[str, ...] = ("kafka", "redis", "s3")
# SeaweedFS components; each also gets a gRPC port = http port + 10000 (SeaweedFS's own
# convention: some internal clients, e.g. the admin worker, dial http+10000 regardless of flags).
_WEED_COMPONENTS: tuple[str, ...] = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000

# Live Popen objects of the children this process started: lets us reap them (no zombies,
# no ResourceWarning) while stack.json still works for processes started elsewhere.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The local stack could not be started (message carries the failing log's tail)."""


class ManagedProcess(BaseModel):
    """One background process of the stack."""

    service: str
    pid: int
    argv: list[str]
    log_path: str
    ports: dict[str, int] = Field(default_factory=dict)


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
        }
        if self.filer_events_topic:
            env["CAPSTREAM_TOPIC_FILER_EVENTS"] = self.filer_events_topic
            env["CAPSTREAM_S3_EVENTS_BRIDGE"] = "true"
        return env

    @property
    def durable_kafka(self) -> bool:
        return not self.kafka_storage_engine.startswith("memory://")

    def log_path(self, service: Service) -> Path:
        return Path(self.data_dir) / "logs" / _SERVICES[service][1]


# --------------------------------------------------------------------------------------------
# ports


def _port_is_free(port: int, host: str = HOST) -> bool:
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


def _free_port_pair(reserved: set[int], offset: int = _GRPC_OFFSET) -> int:
    """A port p with p and p+offset both free; both go into ``reserved``.

    Drawn from 10000-21999 so p+offset stays below Linux's ephemeral range (32768+).
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(10000, 22000)
        if port in reserved or port + offset in reserved:
            continue
        if _port_is_free(port) and _port_is_free(port + offset):
            reserved.update((port, port + offset))
            return port
    raise StackError("could not find a free pair of TCP ports for SeaweedFS")


# --------------------------------------------------------------------------------------------
# processes


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _log_tail(path: Path | str, max_bytes: int = 6000, max_lines: int = 40) -> str:
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


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without AWS_* (so no stray profile/token leaks in) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


def _spawn(
    service: str,
    argv: list[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ports: Mapping[str, int] | None = None,
) -> ManagedProcess:
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
    _CHILDREN[proc.pid] = proc
    log.info("localstack.process_started", service=service, pid=proc.pid, log=str(log_path), ports=ports)
    return ManagedProcess(service=service, pid=proc.pid, argv=argv, log_path=str(log_path), ports=dict(ports or {}))


def _proc_comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def is_process_alive(pid: int, expected_name: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, its name matches (guards pid reuse)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return False
    else:
        try:  # reap it if it is our child started by other means
            reaped, _status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return False
        except ChildProcessError:
            pass
        except OSError:
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            stat_text = Path(f"/proc/{pid}/stat").read_text()
            if stat_text.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        except (OSError, IndexError):
            return False
        if expected_name is not None:
            comm = _proc_comm(pid)
            if comm is not None and not expected_name.startswith(comm):
                return False
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
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


def _wait_dead(pids: Mapping[int, str | None], timeout: float) -> set[int]:
    """Wait until every pid is gone; returns the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = {pid for pid, name in pids.items() if is_process_alive(pid, name)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if is_process_alive(pid, pids[pid])}
    return alive


def _stop_pids(pids: Mapping[int, str | None], timeout: float = 10.0) -> bool:
    """SIGTERM each process group, wait ``timeout``, SIGKILL leftovers. True if any was running."""
    running = {pid: name for pid, name in pids.items() if is_process_alive(pid, name)}
    if not running:
        return False
    for pid in running:
        _signal_group(pid, signal.SIGTERM)
    leftovers = _wait_dead(running, timeout)
    for pid in leftovers:
        log.warning("localstack.sigkill", pid=pid, name=running[pid])
        _signal_group(pid, signal.SIGKILL)
    if leftovers and _wait_dead({pid: running[pid] for pid in leftovers}, 5.0):
        log.error("localstack.unkillable", pids=sorted(leftovers))
    return True


def _remove_weed_sockets(ports: Iterable[int]) -> None:
    """weed leaves /tmp/seaweedfs-<component>-<port>.sock files behind; remove those of a stopped weed."""
    for port in ports:
        for sock_path in Path("/tmp").glob(f"seaweedfs-*-{int(port)}.sock"):
            sock_path.unlink(missing_ok=True)


def stop_process(process: ManagedProcess, timeout: float = 10.0) -> bool:
    """Stop one managed process (and its group). True if it was running."""
    name = _SERVICES.get(process.service, (None, ""))[0]
    was_running = _stop_pids({process.pid: name}, timeout)
    if process.service == "s3":
        _remove_weed_sockets(process.ports.values())
    return was_running


# --------------------------------------------------------------------------------------------
# starting single services


def start_tansu(
    data_dir: Path,
    port: int,
    *,
    storage_engine: str = MEMORY_ENGINE,
    s3_endpoint_url: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
) -> ManagedProcess:
    """Start the Tansu broker on 127.0.0.1:``port`` (does not wait for readiness).

    With ``storage_engine="s3://BUCKET/"`` the S3 endpoint and keys are required; the bucket
    must already exist.
    """
    try:
        binary = find_tansu()
    except BinaryNotFoundError as exc:
        raise StackError(str(exc)) from exc
    url = f"tcp://{HOST}:{port}"
    argv = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage_engine,
    ]
    extra: dict[str, str] = {}
    if storage_engine.startswith("s3://"):
        if not (s3_endpoint_url and s3_access_key and s3_secret_key):
            raise StackError("Tansu's s3:// storage engine needs s3_endpoint_url, s3_access_key, s3_secret_key")
        extra = {
            "AWS_ENDPOINT": s3_endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }
    return _spawn(
        "kafka",
        argv,
        Path(data_dir) / "logs" / _SERVICES["kafka"][1],
        env=_clean_env(extra),
        cwd=Path(data_dir),
        ports={"kafka": port},
    )


def start_redis(data_dir: Path, port: int) -> ManagedProcess:
    """Start redis-server on 127.0.0.1:``port`` with an append-only file (fsync every second),
    so a restart keeps claims and progress, as capstream's production Redis should."""
    try:
        binary = find_redis_server()
    except BinaryNotFoundError as exc:
        raise StackError(str(exc)) from exc
    redis_dir = Path(data_dir) / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--dir",
        str(redis_dir),
        "--daemonize",
        "no",
    ]
    return _spawn(
        "redis",
        argv,
        Path(data_dir) / "logs" / _SERVICES["redis"][1],
        env=_clean_env({}),
        cwd=redis_dir,
        ports={"redis": port},
    )


def _weed_ports(s3_port: int, reserved: set[int], given: Mapping[str, int] | None = None) -> dict[str, int]:
    """HTTP + gRPC ports for each SeaweedFS component (explicit, so stacks can coexist)."""
    ports: dict[str, int] = dict(given or {})
    if "s3" not in ports:
        ports["s3"] = s3_port
        reserved.add(s3_port)
        grpc = s3_port + _GRPC_OFFSET
        if grpc < 65536 and grpc not in reserved and _port_is_free(grpc):
            ports["s3.grpc"] = grpc
        else:
            ports["s3.grpc"] = free_port(exclude=reserved)
        reserved.add(ports["s3.grpc"])
    for component in _WEED_COMPONENTS:
        if component in ports:
            continue
        http = _free_port_pair(reserved)
        ports[component] = http
        ports[f"{component}.grpc"] = http + _GRPC_OFFSET
    return ports


def start_seaweedfs(
    data_dir: Path,
    s3_port: int,
    *,
    access_key: str,
    secret_key: str,
    ports: Mapping[str, int] | None = None,
    reserved: set[int] | None = None,
) -> ManagedProcess:
    """Start ``weed mini`` (master, volume, filer, S3) on 127.0.0.1 with data in ``data_dir/s3``.

    ``ports`` may give every component's port (keys ``master``, ``master.grpc``, ... as in the
    returned record); missing ones are picked free. WebDAV, the admin UI, Iceberg and Lance
    endpoints and telemetry are off. Its working directory is ``data_dir/s3``: a
    ``notification.toml`` placed there makes the filer publish events to Kafka.
    """
    try:
        binary = find_weed()
    except BinaryNotFoundError as exc:
        raise StackError(str(exc)) from exc
    s3_dir = Path(data_dir) / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    all_ports = _weed_ports(s3_port, reserved if reserved is not None else set(), ports)
    argv = [
        str(binary),
        "mini",
        f"-dir={s3_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    for component in _WEED_COMPONENTS:
        argv.append(f"-{component}.port={all_ports[component]}")
        argv.append(f"-{component}.port.grpc={all_ports[component + '.grpc']}")
    # weed mini makes the env's AWS keys its admin S3 identity.
    env = _clean_env({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    return _spawn(
        "s3",
        argv,
        Path(data_dir) / "logs" / _SERVICES["s3"][1],
        env=env,
        cwd=s3_dir,
        ports=all_ports,
    )


def configure_filer_events(s3_dir: Path, kafka_bootstrap: str | None, topic: str = FILER_EVENTS_TOPIC) -> None:
    """Write (or, with ``kafka_bootstrap=None``, remove) the ``notification.toml`` that makes
    weed's filer publish its change events to Kafka. weed reads it from its working directory
    at start; its Kafka client exits weed if the broker cannot be reached then."""
    path = Path(s3_dir) / NOTIFICATION_FILE
    if kafka_bootstrap is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by capstream's local stack: filer change events -> Kafka\n"
        "[notification.kafka]\n"
        "enabled = true\n"
        f"hosts = [{json.dumps(kafka_bootstrap)}]\n"
        f"topic = {json.dumps(topic)}\n"
        'offsetFile = "./last.offset"\n'
        "offsetSaveIntervalSeconds = 10\n"
    )


# --------------------------------------------------------------------------------------------
# readiness


def _check_alive(process: ManagedProcess | None) -> None:
    if process is None:
        return
    child = _CHILDREN.get(process.pid)  # read before is_process_alive() forgets a dead child
    if not is_process_alive(process.pid):
        code = child.returncode if child is not None else None
        raise StackError(
            f"{process.service} ({Path(process.argv[0]).name}, pid {process.pid}) exited"
            f" (code {code}) during startup; tail of {process.log_path}:\n{_log_tail(process.log_path)}"
        )


def _timeout_error(what: str, timeout: float, last: object, process: ManagedProcess | None) -> StackError:
    msg = f"{what} not ready after {timeout:.0f} s (last error: {last!r})"
    if process is not None:
        msg += f"; tail of {process.log_path}:\n{_log_tail(process.log_path)}"
    return StackError(msg)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf.extend(chunk)
    return bytes(buf)


def kafka_metadata_brokers(bootstrap: str, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Send a raw Kafka Metadata v1 request; return the advertised brokers (node, host, port)."""
    host, _, port_text = bootstrap.rpartition(":")
    client_id = b"capstream-localstack"
    correlation_id = 7
    # request header v1: api_key=3 (Metadata), api_version=1, correlation_id, client_id;
    # body: topics = null (-1) -> all topics.
    payload = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id + struct.pack(">i", -1)
    with socket.create_connection((host, int(port_text)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        data = _recv_exact(sock, size)
    offset = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values

    def take_string() -> str | None:
        nonlocal offset
        (length,) = take(">h")
        if length < 0:
            return None
        text = data[offset : offset + length].decode()
        offset += length
        return text

    (got_correlation,) = take(">i")
    if got_correlation != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got_correlation}")
    (count,) = take(">i")
    brokers: list[tuple[int, str, int]] = []
    for _ in range(count):
        (node_id,) = take(">i")
        broker_host = take_string() or ""
        (broker_port,) = take(">i")
        take_string()  # rack
        brokers.append((int(node_id), broker_host, int(broker_port)))
    return brokers


def wait_for_kafka(bootstrap: str, *, timeout: float = 30.0, process: ManagedProcess | None = None) -> None:
    """Wait until the broker answers a Metadata request advertising ``bootstrap``."""
    host, _, port_text = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        _check_alive(process)
        try:
            brokers = kafka_metadata_brokers(bootstrap)
            if any(b_host == host and b_port == int(port_text) for _, b_host, b_port in brokers):
                return
            last = f"metadata advertises {brokers}, expected {bootstrap}"
        except (OSError, struct.error, UnicodeDecodeError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _timeout_error(f"Kafka at {bootstrap}", timeout, last, process)
        time.sleep(0.1)


def wait_for_redis(url: str, *, timeout: float = 20.0, process: ManagedProcess | None = None) -> None:
    """Wait until Redis at ``url`` answers PING."""
    import redis

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        _check_alive(process)
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = exc
        finally:
            client.close()
        if time.monotonic() >= deadline:
            raise _timeout_error(f"Redis at {url}", timeout, last, process)
        time.sleep(0.1)


def _s3_client(endpoint_url: str, access_key: str, secret_key: str) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


def wait_for_s3(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    buckets: Iterable[str],
    *,
    timeout: float = 60.0,
    process: ManagedProcess | None = None,
) -> None:
    """Create each bucket (idempotently) until S3 accepts it and HEAD succeeds."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = _s3_client(endpoint_url, access_key, secret_key)
    deadline = time.monotonic() + timeout
    pending = list(buckets)
    last: object = None
    try:
        while pending:
            _check_alive(process)
            bucket = pending[0]
            try:
                try:
                    client.create_bucket(Bucket=bucket)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                client.head_bucket(Bucket=bucket)
                pending.pop(0)
                continue
            except (BotoCoreError, ClientError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise _timeout_error(f"S3 at {endpoint_url} (bucket {bucket!r})", timeout, last, process)
            time.sleep(0.2)
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# the whole stack


def _stack_file(data_dir: Path) -> Path:
    return Path(data_dir) / STACK_FILE


def _write_stack(endpoints: StackEndpoints) -> None:
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


def _expected_name(service: str) -> str | None:
    return _SERVICES.get(service, (None, ""))[0]


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
    stopped = [s for s, pid in endpoints.pids.items() if not is_process_alive(pid, _expected_name(s))]
    return endpoints, stopped


def revive_stack(data_dir: Path, *, timeout: float = 60.0) -> StackEndpoints | None:
    """Restart the stopped services of the recorded stack on their recorded ports, so every
    client configured for it keeps working. None if there is no recorded stack."""
    endpoints, stopped = recorded_stack(data_dir)
    if endpoints is None:
        return None
    # Storage before the broker: a durable broker keeps its log in SeaweedFS.
    for service in sorted(stopped, key=lambda s: ("s3", "redis", "kafka").index(s) if s in _SERVICES else 9):
        endpoints = start_service(endpoints, cast(Service, service), timeout=timeout)
    return endpoints


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
    weed_ports: dict[str, int] | None = None
    if s3_port is None:
        s3_port = _free_port_pair(reserved)
        weed_ports = {"s3": s3_port, "s3.grpc": s3_port + _GRPC_OFFSET}
    reserved.add(s3_port)
    s3_endpoint_url = f"http://{HOST}:{s3_port}"
    kafka_bucket = f"{bucket}-kafka"
    storage_engine = f"s3://{kafka_bucket}/" if durable_kafka else MEMORY_ENGINE

    bootstrap = f"{HOST}:{kafka_port}"
    filer_topic = FILER_EVENTS_TOPIC if s3_events and not durable_kafka else None
    if s3_events and durable_kafka:
        log.warning("localstack.s3_events_off", reason="the durable broker lives in SeaweedFS itself")
    configure_filer_events(data_dir / "s3", bootstrap if filer_topic else None)

    started: list[ManagedProcess] = []
    try:
        tansu: ManagedProcess | None = None
        if filer_topic:
            tansu = start_tansu(data_dir, kafka_port)
            started.append(tansu)
            wait_for_kafka(bootstrap, timeout=timeout, process=tansu)
        weed = start_seaweedfs(
            data_dir,
            s3_port,
            access_key=access_key,
            secret_key=secret_key,
            ports=weed_ports,
            reserved=reserved,
        )
        started.append(weed)
        redis_proc = start_redis(data_dir, redis_port)
        started.append(redis_proc)
        if tansu is None and not durable_kafka:
            tansu = start_tansu(data_dir, kafka_port)
            started.append(tansu)
        buckets = [bucket, kafka_bucket] if durable_kafka else [bucket]
        wait_for_s3(s3_endpoint_url, access_key, secret_key, buckets, timeout=timeout, process=weed)
        if tansu is None:
            tansu = start_tansu(
                data_dir,
                kafka_port,
                storage_engine=storage_engine,
                s3_endpoint_url=s3_endpoint_url,
                s3_access_key=access_key,
                s3_secret_key=secret_key,
            )
            started.append(tansu)
        redis_url = f"redis://{HOST}:{redis_port}/0"
        wait_for_redis(redis_url, timeout=timeout, process=redis_proc)
        wait_for_kafka(bootstrap, timeout=timeout, process=tansu)
    except BaseException as exc:
        log.error(
            "localstack.start_failed",
            data_dir=str(data_dir),
            error=str(exc).splitlines()[0] if str(exc) else "",
        )
        for process in reversed(started):
            stop_process(process, timeout=5.0)
        if isinstance(exc, Exception) and not isinstance(exc, StackError):
            raise StackError(f"starting the local stack failed: {exc!r}") from exc
        raise

    ports: dict[str, int] = {"kafka": kafka_port, "redis": redis_port}
    ports.update({f"weed.{name}": port for name, port in weed.ports.items()})
    endpoints = StackEndpoints(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        s3_endpoint_url=s3_endpoint_url,
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        bucket=bucket,
        data_dir=str(data_dir),
        pids={"kafka": tansu.pid, "redis": redis_proc.pid, "s3": weed.pid},
        ports=ports,
        kafka_storage_engine=storage_engine,
        filer_events_topic=filer_topic,
    )
    _write_stack(endpoints)
    log.info(
        "localstack.started",
        data_dir=str(data_dir),
        seconds=round(time.monotonic() - t0, 2),
        kafka=bootstrap,
        redis=redis_url,
        s3=s3_endpoint_url,
        kafka_storage=storage_engine,
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
        pids = {endpoints.pids[s]: _expected_name(s) for s in group}
        if pids and _stop_pids(pids, timeout):
            any_running = True
    _remove_weed_sockets(port for name, port in endpoints.ports.items() if name.startswith("weed."))
    _stack_file(data_dir).unlink(missing_ok=True)
    log.info("localstack.stopped", data_dir=str(data_dir), was_running=any_running)
    return any_running


# --------------------------------------------------------------------------------------------
# single-service control for chaos tests


def kill_service(
    endpoints: StackEndpoints,
    service: Service,
    *,
    sig: signal.Signals = signal.SIGKILL,
    timeout: float = 10.0,
) -> bool:
    """Send ``sig`` to one service's process group and wait until it is gone. True if it was running."""
    pid = endpoints.pids[service]
    name = _expected_name(service)
    if not is_process_alive(pid, name):
        return False
    _signal_group(pid, sig)
    if _wait_dead({pid: name}, timeout):
        _signal_group(pid, signal.SIGKILL)
        _wait_dead({pid: name}, 5.0)
    if service == "s3":
        _remove_weed_sockets(port for name, port in endpoints.ports.items() if name.startswith("weed."))
    log.info("localstack.service_killed", service=service, pid=pid, signal=sig.name)
    return True


def start_service(endpoints: StackEndpoints, service: Service, *, timeout: float = 60.0) -> StackEndpoints:
    """(Re)start one service on its recorded port(s), wait for it, update stack.json.

    Returns the updated endpoints (new pid). The service must not be running.
    """
    data_dir = Path(endpoints.data_dir)
    if is_process_alive(endpoints.pids.get(service, -1), _expected_name(service)):
        raise StackError(f"{service} is still running (pid {endpoints.pids[service]})")

    def kafka() -> tuple[ManagedProcess, Callable[[ManagedProcess], None]]:
        proc = start_tansu(
            data_dir,
            endpoints.ports.get("kafka") or int(endpoints.kafka_bootstrap.rpartition(":")[2]),
            storage_engine=endpoints.kafka_storage_engine,
            s3_endpoint_url=endpoints.s3_endpoint_url,
            s3_access_key=endpoints.s3_access_key,
            s3_secret_key=endpoints.s3_secret_key,
        )
        return proc, lambda p: wait_for_kafka(endpoints.kafka_bootstrap, timeout=timeout, process=p)

    def redis_() -> tuple[ManagedProcess, Callable[[ManagedProcess], None]]:
        port = endpoints.ports.get("redis") or int(urlsplit(endpoints.redis_url).port or 6379)
        proc = start_redis(data_dir, port)
        return proc, lambda p: wait_for_redis(endpoints.redis_url, timeout=timeout, process=p)

    def s3() -> tuple[ManagedProcess, Callable[[ManagedProcess], None]]:
        weed_ports = {k.removeprefix("weed."): v for k, v in endpoints.ports.items() if k.startswith("weed.")}
        s3_port = int(urlsplit(endpoints.s3_endpoint_url).port or 0)
        proc = start_seaweedfs(
            data_dir,
            s3_port,
            access_key=endpoints.s3_access_key,
            secret_key=endpoints.s3_secret_key,
            ports=weed_ports or None,
        )
        buckets = [endpoints.bucket]
        if endpoints.kafka_storage_engine.startswith("s3://"):
            buckets.append(endpoints.kafka_storage_engine.removeprefix("s3://").strip("/"))
        return proc, lambda p: wait_for_s3(
            endpoints.s3_endpoint_url,
            endpoints.s3_access_key,
            endpoints.s3_secret_key,
            buckets,
            timeout=timeout,
            process=p,
        )

    starters: dict[str, Callable[[], tuple[ManagedProcess, Callable[[ManagedProcess], None]]]] = {
        "kafka": kafka,
        "redis": redis_,
        "s3": s3,
    }
    proc, wait = starters[service]()
    try:
        wait(proc)
    except BaseException:
        stop_process(proc, timeout=5.0)
        raise
    updated = endpoints.model_copy(update={"pids": {**endpoints.pids, service: proc.pid}})
    _write_stack(updated)
    log.info("localstack.service_started", service=service, pid=proc.pid)
    return updated


def kill_broker(endpoints: StackEndpoints, *, graceful: bool = False) -> bool:
    """Kill the broker (SIGKILL, or SIGTERM when ``graceful``)."""
    return kill_service(endpoints, "kafka", sig=signal.SIGTERM if graceful else signal.SIGKILL)


def start_broker(endpoints: StackEndpoints, *, timeout: float = 30.0) -> StackEndpoints:
    """Start the broker again on the same port and storage engine; returns updated endpoints."""
    return start_service(endpoints, "kafka", timeout=timeout)


def restart_redis(endpoints: StackEndpoints, *, graceful: bool = False, timeout: float = 20.0) -> StackEndpoints:
    """Kill Redis and start an empty one on the same port (Redis state is lost by design)."""
    kill_service(endpoints, "redis", sig=signal.SIGTERM if graceful else signal.SIGKILL)
    return start_service(endpoints, "redis", timeout=timeout)
