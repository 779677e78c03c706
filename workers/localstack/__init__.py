"""Local stack for tests and the offline demo: Tansu broker, Redis, SeaweedFS S3 as background processes.

``processes``: spawn, liveness, signals, stop; ``services``: how each service starts;
``readiness``: waits until a service answers; ``stack``: the whole stack and its ``stack.json``;
``control``: kill/restart one service (chaos tests, reviving a partly stopped stack);
``vllm_server``: an OpenAI-compatible vLLM server.
"""

from workers.localstack.binaries import BinaryNotFoundError, find_redis_server, find_tansu, find_weed
from workers.localstack.control import (
    kill_broker,
    kill_service,
    restart_redis,
    revive_stack,
    start_broker,
    start_service,
)
from workers.localstack.processes import ManagedProcess, StackError, free_port, is_process_alive
from workers.localstack.readiness import wait_for_kafka, wait_for_redis, wait_for_s3
from workers.localstack.services import (
    FILER_EVENTS_TOPIC,
    MEMORY_ENGINE,
    Service,
    configure_filer_events,
    start_redis,
    start_seaweedfs,
    start_tansu,
    stop_process,
)
from workers.localstack.stack import StackEndpoints, read_stack, recorded_stack, start_stack, stop_stack

__all__ = [
    "FILER_EVENTS_TOPIC",
    "MEMORY_ENGINE",
    "BinaryNotFoundError",
    "ManagedProcess",
    "Service",
    "StackEndpoints",
    "StackError",
    "configure_filer_events",
    "find_redis_server",
    "find_tansu",
    "find_weed",
    "free_port",
    "is_process_alive",
    "kill_broker",
    "kill_service",
    "read_stack",
    "recorded_stack",
    "restart_redis",
    "revive_stack",
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
