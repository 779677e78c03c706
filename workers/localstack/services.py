"""How each service of the local stack is started: Tansu (Kafka protocol), redis-server, SeaweedFS.

One function per service turns ports, a data directory and credentials into the exact command
line, environment and working directory, then spawns it (see ``processes``) without waiting for
readiness (see ``readiness``). Everything binds 127.0.0.1 and logs to
``data_dir/logs/<binary>.log``; ``SERVICES`` maps each service to its process name (the pid-reuse
guard) and that log file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

from workers.localstack.binaries import BinaryNotFoundError, find_redis_server, find_tansu, find_weed
from workers.localstack.processes import (
    HOST,
    ManagedProcess,
    StackError,
    clean_env,
    free_port,
    port_is_free,
    spawn,
    stop_pids,
)

MEMORY_ENGINE = "memory://tansu/"
REGION = "us-east-1"
FILER_EVENTS_TOPIC = "seaweedfs.filer"
NOTIFICATION_FILE = "notification.toml"

Service = Literal["kafka", "redis", "s3"]
# service -> (process name as the kernel reports it, log file name)
SERVICES: dict[str, tuple[str, str]] = {
    "kafka": ("tansu", "tansu.log"),
    "redis": ("redis-server", "redis.log"),
    "s3": ("weed", "seaweedfs.log"),
}
# SeaweedFS components; each also gets a gRPC port = http port + 10000 (SeaweedFS's own
# convention: some internal clients, e.g. the admin worker, dial http+10000 regardless of flags).
WEED_COMPONENTS: tuple[str, ...] = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000


def expected_name(service: str) -> str | None:
    """The process name of ``service`` (None for processes outside the stack, e.g. vLLM)."""
    return SERVICES.get(service, (None, ""))[0]


def service_log_path(data_dir: Path, service: str) -> Path:
    return Path(data_dir) / "logs" / SERVICES[service][1]


def _binary(find: Callable[[], Path]) -> Path:
    try:
        return find()
    except BinaryNotFoundError as exc:
        raise StackError(str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Tansu


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
    binary = _binary(find_tansu)
    url = f"tcp://{HOST}:{port}"
    argv = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    argv += ["--storage-engine", storage_engine]
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
    return spawn(
        "kafka",
        argv,
        service_log_path(data_dir, "kafka"),
        env=clean_env(extra),
        cwd=Path(data_dir),
        ports={"kafka": port},
    )


# --------------------------------------------------------------------------------------------
# Redis


def start_redis(data_dir: Path, port: int) -> ManagedProcess:
    """Start redis-server on 127.0.0.1:``port`` with an append-only file (fsync every second),
    so a restart keeps claims and progress, as capstream's production Redis should."""
    binary = _binary(find_redis_server)
    redis_dir = Path(data_dir) / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(binary), "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(redis_dir), "--daemonize", "no"]
    return spawn(
        "redis",
        argv,
        service_log_path(data_dir, "redis"),
        env=clean_env({}),
        cwd=redis_dir,
        ports={"redis": port},
    )


# --------------------------------------------------------------------------------------------
# SeaweedFS


def free_port_pair(reserved: set[int], offset: int = GRPC_OFFSET) -> int:
    """A port p with p and p+offset both free; both go into ``reserved``.

    Drawn from 10000-21999 so p+offset stays below Linux's ephemeral range (32768+).
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(10000, 22000)
        if port in reserved or port + offset in reserved:
            continue
        if port_is_free(port) and port_is_free(port + offset):
            reserved.update((port, port + offset))
            return port
    raise StackError("could not find a free pair of TCP ports for SeaweedFS")


def weed_ports(s3_port: int, reserved: set[int], given: Mapping[str, int] | None = None) -> dict[str, int]:
    """HTTP + gRPC ports for each SeaweedFS component (explicit, so stacks can coexist)."""
    ports: dict[str, int] = dict(given or {})
    if "s3" not in ports:
        ports["s3"] = s3_port
        reserved.add(s3_port)
        grpc = s3_port + GRPC_OFFSET
        if grpc < 65536 and grpc not in reserved and port_is_free(grpc):
            ports["s3.grpc"] = grpc
        else:
            ports["s3.grpc"] = free_port(exclude=reserved)
        reserved.add(ports["s3.grpc"])
    for component in WEED_COMPONENTS:
        if component in ports:
            continue
        http = free_port_pair(reserved)
        ports[component] = http
        ports[f"{component}.grpc"] = http + GRPC_OFFSET
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
    binary = _binary(find_weed)
    s3_dir = Path(data_dir) / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    all_ports = weed_ports(s3_port, reserved if reserved is not None else set(), ports)
    argv = [str(binary), "mini", f"-dir={s3_dir}", f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false"]
    argv += ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    for component in WEED_COMPONENTS:
        argv.append(f"-{component}.port={all_ports[component]}")
        argv.append(f"-{component}.port.grpc={all_ports[component + '.grpc']}")
    # weed mini makes the env's AWS keys its admin S3 identity.
    env = clean_env({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    return spawn("s3", argv, service_log_path(data_dir, "s3"), env=env, cwd=s3_dir, ports=all_ports)


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


def remove_weed_sockets(ports: Iterable[int]) -> None:
    """weed leaves /tmp/seaweedfs-<component>-<port>.sock files behind; remove those of a stopped weed."""
    for port in ports:
        for sock_path in Path("/tmp").glob(f"seaweedfs-*-{int(port)}.sock"):
            sock_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# stopping


def stop_process(process: ManagedProcess, timeout: float = 10.0) -> bool:
    """Stop one managed process (and its group). True if it was running."""
    was_running = stop_pids({process.pid: expected_name(process.service)}, timeout)
    if process.service == "s3":
        remove_weed_sockets(process.ports.values())
    return was_running
