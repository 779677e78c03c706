"""Is a freshly started service answering yet? Kafka metadata, Redis PING, S3 CreateBucket.

A process that runs is not a service that works: each wait polls the real protocol, through
the same client libraries the workers use, until it answers or ``timeout`` passes. Between
attempts it checks that the process is still alive, so a service that dies at start fails at
once with its exit code and log tail instead of after the whole timeout.

The waits are synchronous, so they can be called from sync code and from inside a running
event loop alike (the CLI, sync pytest fixtures, ``asyncio.to_thread`` in the chaos test).
aiokafka is async: the Kafka wait runs it on its own event loop, on a private thread when the
caller's thread already runs one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from workers.localstack.processes import ManagedProcess, StackError, check_alive, log_tail
from workers.localstack.services import REGION

T = TypeVar("T")


def timeout_error(what: str, timeout: float, last: object, process: ManagedProcess | None) -> StackError:
    msg = f"{what} not ready after {timeout:.0f} s (last error: {last!r})"
    if process is not None:
        msg += f"; tail of {process.log_path}:\n{log_tail(process.log_path)}"
    return StackError(msg)


def _run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="localstack-ready") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


# --------------------------------------------------------------------------------------------
# Kafka


async def _advertised_brokers(bootstrap: str, probe_s: float) -> list[tuple[str, int]]:
    """The (host, port) of every broker the bootstrap server advertises in its metadata."""
    from aiokafka.client import AIOKafkaClient

    host, _, port_text = bootstrap.rpartition(":")
    # Refused connections are the normal state while the broker starts: probe the port first,
    # so aiokafka does not log an error for every attempt.
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port_text)), probe_s)
    writer.close()
    await writer.wait_closed()
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, client_id="capstream-localstack", request_timeout_ms=int(probe_s * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), probe_s + 1.0)
        return sorted((broker.host, broker.port) for broker in client.cluster.brokers())
    finally:
        await client.close()


async def _wait_for_kafka(bootstrap: str, wait_s: float, process: ManagedProcess | None) -> None:
    from aiokafka.errors import KafkaError

    host, _, port_text = bootstrap.rpartition(":")
    deadline = time.monotonic() + wait_s
    last: object = None
    while True:
        check_alive(process)
        try:
            brokers = await _advertised_brokers(bootstrap, probe_s=2.0)
            if (host, int(port_text)) in brokers:
                return
            last = f"metadata advertises {brokers}, expected {bootstrap}"
        except (OSError, TimeoutError, KafkaError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise timeout_error(f"Kafka at {bootstrap}", wait_s, last, process)
        await asyncio.sleep(0.1)


def wait_for_kafka(bootstrap: str, *, timeout: float = 30.0, process: ManagedProcess | None = None) -> None:
    """Wait until the broker answers a Metadata request advertising ``bootstrap``."""
    _run_blocking(lambda: _wait_for_kafka(bootstrap, timeout, process))


# --------------------------------------------------------------------------------------------
# Redis


def wait_for_redis(url: str, *, timeout: float = 20.0, process: ManagedProcess | None = None) -> None:
    """Wait until Redis at ``url`` answers PING."""
    import redis

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        check_alive(process)
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = exc
        finally:
            client.close()
        if time.monotonic() >= deadline:
            raise timeout_error(f"Redis at {url}", timeout, last, process)
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# S3


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
            check_alive(process)
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
                raise timeout_error(f"S3 at {endpoint_url} (bucket {bucket!r})", timeout, last, process)
            time.sleep(0.2)
    finally:
        client.close()
