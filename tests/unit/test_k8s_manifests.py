"""docker/k8s: valid Kubernetes and KEDA objects that mean what the workers do.

Parsed, not applied (no cluster here). Core kinds are checked against kubernetes-validate's
schemas of Kubernetes 1.33 in strict mode (an unknown field fails, as with kubectl's default
strict field validation); ScaledObjects against KEDA's CRD schema
(``data/keda_scaledobject_schema.yaml``). Then the meaning: each stage's ScaledObject watches
every consumer group and topic its worker really uses (the registry's consumers, with
workers/settings.py under the ConfigMap), never more replicas than partitions
(docker/compose.yaml's kafka-init), probes on the metrics port, a grace period that covers
the drain, every model server on the tested vLLM release, and a dashboard whose every metric
is one the workers export.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.decode_memory import WORST_PEAK_BYTES
from tests import compose_checks as cc
from workers import engine_version as ev
from workers.runtime.metrics import WorkerMetrics
from workers.runtime.retention import retention_problems
from workers.settings import (
    CommonSettings,
    DecodeSettings,
    IndexSettings,
    ModelStageSettings,
    SearchSettings,
)
from workers.stages import REGISTRY, StageRegistry

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
COMPOSE = ROOT / "docker" / "compose.yaml"
KEDA_SCHEMA = Path(__file__).parent / "data" / "keda_scaledobject_schema.yaml"
KUBERNETES_VERSION = "1.33"
CORE_KINDS = {"Namespace", "ConfigMap", "Deployment", "Service", "NetworkPolicy"}
CUSTOM_KINDS = {"ScaledObject", "KafkaTopic"}  # KEDA's (schema below) and Strimzi's (topic_problems)
# The workers' consumers start a new group at the earliest offset (workers/runtime/kafka.py);
# KEDA must count that backlog as lag too.
OFFSET_RESET = "earliest"
# Measured peak RSS of one decode on the worst input its budgets accept (loadtest/decode_memory.py).
DECODE_PEAK_RSS = WORST_PEAK_BYTES
DECODE_MEMORY_HEADROOM = 1.25  # above objects in flight x that peak, as compose's check
VLLM_METRICS = {"vllm:num_requests_waiting", "vllm:num_requests_running"}
Manifest = dict[str, Any]


def load_manifests(directory: Path = K8S) -> list[Manifest]:
    """Every object of every ``*.yaml`` in the directory, except the kustomization."""
    docs: list[Manifest] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def kafka_init_partitions(compose_text: str) -> dict[str, int]:
    """``create <topic> <partitions>`` lines of compose.yaml's kafka-init: production partitions."""
    init = yaml.safe_load(compose_text)["services"]["kafka-init"]
    script = "\n".join(init["command"])
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s*create (\S+) (\d+)", script, re.MULTILINE)}


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: Manifest) -> list[Manifest]:
    spec: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    return spec


def container_env(container: Manifest, config_maps: dict[str, Manifest]) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def worker_stage(deployment: Manifest) -> str | None:
    """``<stage>`` of a ``capstream worker <stage>`` Deployment, else None."""
    (container,) = containers(deployment)
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:2] == ["capstream", "worker"]:
        return str(argv[2])
    return None


def stage_inputs(stage: str) -> set[tuple[str, str]]:
    """(consumer group, topic) pairs a stage consumes, as the worker resolves them from env."""
    spec = REGISTRY[stage]
    return set(spec.groups(spec.load_settings()).items())


def topic_partitions(topic: str, production: dict[str, int]) -> int:
    """Production partitions of a topic: kafka-init's, or what a worker creates when missing."""
    if topic in production:
        return production[topic]
    settings = CommonSettings()
    if topic in REGISTRY.input_topics(settings):
        return settings.topic_partitions
    raise AssertionError(f"no known partition count for {topic}: add it to kafka-init")


def kafka_triggers(scaled_object: Manifest) -> list[dict[str, str]]:
    return [t["metadata"] for t in scaled_object["spec"]["triggers"] if t["type"] == "kafka"]


def settings_env_names() -> set[str]:
    """Every ``CAPSTREAM_*`` variable some capstream process reads."""
    classes = (*REGISTRY.settings_classes(), SearchSettings)
    return {f"CAPSTREAM_{name.upper()}" for cls in classes for name in cls.model_fields}


# PromQL as the dashboard writes it: strings, label matchers, ranges and groupings removed,
# an identifier followed by "(" is a function, any other one a metric.
_PROMQL_NOISE = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
PROMQL_FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "label_values"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) an expression uses."""
    text = _GROUPING.sub(" ", _PROMQL_NOISE.sub(" ", expr))
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            functions.add(word)
        elif word not in PROMQL_KEYWORDS:
            metrics.add(word)
    return metrics, functions


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def exported_samples() -> dict[str, str]:
    """Sample name -> metric family of the worker registry (prometheus-client appends
    ``_total`` to counters and ``_bucket``/``_sum``/``_count`` to histograms)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {fam.name + s: fam.name for fam in WorkerMetrics().registry.collect() for s in suffixes[fam.type]}


def check_dashboard(dashboard: dict[str, Any]) -> None:
    """Every metric the dashboard queries exists, and every worker metric has a panel."""
    exported = exported_samples()
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        metrics, functions = promql_names(expr)
        assert metrics, f"no metric in {expr!r}"
        assert functions <= PROMQL_FUNCTIONS, f"unknown function {functions - PROMQL_FUNCTIONS} in {expr!r}"
        unknown = metrics - set(exported) - VLLM_METRICS
        assert not unknown, f"{sorted(unknown)} in {expr!r} are not exported by WorkerMetrics or vLLM"
        used |= metrics
    missing = set(exported.values()) - {exported[m] for m in used if m in exported}
    assert not missing, f"worker metrics without a panel: {sorted(missing)}"
    assert VLLM_METRICS <= used


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return load_manifests()


@pytest.fixture(scope="module")
def config_maps(manifests: list[Manifest]) -> dict[str, Manifest]:
    return of_kind(manifests, "ConfigMap")


@pytest.fixture(scope="module")
def deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    return of_kind(manifests, "Deployment")


@pytest.fixture(scope="module")
def scaled_objects(manifests: list[Manifest]) -> dict[str, Manifest]:
    return of_kind(manifests, "ScaledObject")


@pytest.fixture(scope="module")
def partitions() -> dict[str, int]:
    return kafka_init_partitions(COMPOSE.read_text())


@pytest.fixture(scope="module")
def keda_validator() -> Any:
    schema = yaml.safe_load(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads((K8S / "grafana-dashboard.json").read_text())
    return data


@pytest.fixture
def env_of(monkeypatch: pytest.MonkeyPatch, config_maps: dict[str, Manifest]) -> Any:
    """Puts a container's environment (and only it, of CAPSTREAM_*) into os.environ, so the
    settings classes resolve what the deployed worker would."""

    def apply(container: Manifest) -> dict[str, str]:
        for name in settings_env_names():
            monkeypatch.delenv(name, raising=False)
        env = container_env(container, config_maps)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return apply


def test_core_kinds_pass_kubernetes_strict_validation(manifests: list[Manifest]) -> None:
    core = [d for d in manifests if d["kind"] not in CUSTOM_KINDS]
    assert {d["kind"] for d in core} == CORE_KINDS
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_scaled_objects_pass_keda_crd_schema(scaled_objects: dict[str, Manifest], keda_validator: Any) -> None:
    assert scaled_objects
    for doc in scaled_objects.values():
        keda_validator.validate(doc)


def test_keda_schema_refuses_unknown_fields_and_numbers_as_trigger_metadata(
    scaled_objects: dict[str, Manifest], keda_validator: Any
) -> None:
    so = scaled_objects["capstream-decode"]
    misspelt = {**so, "spec": {**so["spec"], "maxReplicas": 4}}
    trigger = so["spec"]["triggers"][0]
    numeric = {
        **so,
        "spec": {**so["spec"], "triggers": [{**trigger, "metadata": {**trigger["metadata"], "lagThreshold": 6}}]},
    }
    for broken in (misspelt, numeric):
        with pytest.raises(jsonschema.ValidationError):
            keda_validator.validate(broken)


def stage_deployment_problems(deployments: dict[str, Manifest], registry: StageRegistry = REGISTRY) -> list[str]:
    """Every registered stage (add-ons too: the bridge serves the SeaweedFS setup) has a
    ``capstream worker STAGE`` Deployment, and every worker Deployment runs a registered stage."""
    deployed = {stage for d in deployments.values() if (stage := worker_stage(d)) is not None}
    return [f"no Deployment runs `capstream worker {s}`" for s in registry.names() if s not in deployed] + [
        f"`capstream worker {s}` is no registered stage" for s in sorted(deployed - set(registry.names()))
    ]


def topic_problems(
    kafka_topics: dict[str, Manifest], partitions: dict[str, int], registry: StageRegistry = REGISTRY
) -> list[str]:
    """topics.yaml declares every topic the deployed stages use (add-ons aside: the bridge's
    feed is SeaweedFS's), as Strimzi's KafkaTopic v1beta2, with kafka-init's partitions and
    the retention of its role in the registry: the record topics kept forever. Resolved with
    the current environment (``env_of`` puts the ConfigMap's there)."""
    problems = []
    for spec in registry:
        if not spec.required:
            continue
        settings = spec.load_settings()
        roles = registry.topic_retention(settings)
        for topic in (*spec.input_topics(settings), *spec.dlq_topics(settings), *spec.output_topics(settings)):
            declared = kafka_topics.get(topic)
            if declared is None:
                problems.append(f"topics.yaml has no KafkaTopic {topic} ({spec.name} uses it)")
                continue
            topic_spec = declared["spec"]
            if declared["apiVersion"] != "kafka.strimzi.io/v1beta2" or not declared["metadata"]["labels"].get(
                "strimzi.io/cluster"
            ):
                problems.append(f"{topic}: not a Strimzi v1beta2 KafkaTopic of a cluster")
            if topic_spec.get("partitions") != partitions.get(topic):
                problems.append(
                    f"{topic}: {topic_spec.get('partitions')} partitions, kafka-init has {partitions.get(topic)}"
                )
            configs = {k: str(v) for k, v in (topic_spec.get("config") or {}).items()}
            problems += retention_problems(topic, roles[topic], configs)
    return list(dict.fromkeys(problems))


@pytest.fixture(scope="module")
def kafka_topics(manifests: list[Manifest]) -> dict[str, Manifest]:
    return of_kind(manifests, "KafkaTopic")


def test_topics_yaml_declares_every_topic_with_its_partitions_and_retention(
    kafka_topics: dict[str, Manifest], partitions: dict[str, int], deployments: dict[str, Manifest], env_of: Any
) -> None:
    env_of(containers(deployments["capstream-decode"])[0])
    assert kafka_topics
    assert topic_problems(kafka_topics, partitions) == []


@pytest.mark.parametrize(
    ("topic", "change", "mention"),
    [
        ("media.captions", {"retention.ms": 604800000}, "media.captions (record) has retention.ms=604800000"),
        ("media.removals", {"retention.bytes": 1073741824}, "media.removals (record) has retention.bytes=1073741824"),
        ("media.embeddings", None, "media.embeddings (record) has no retention.ms"),
        ("media.segments.dlq", {"retention.ms": 86400000}, "media.segments.dlq (dead letters) has retention.ms"),
    ],
)
def test_topic_check_catches_a_finite_record_retention(
    kafka_topics: dict[str, Manifest],
    partitions: dict[str, int],
    deployments: dict[str, Manifest],
    env_of: Any,
    topic: str,
    change: dict[str, int] | None,
    mention: str,
) -> None:
    env_of(containers(deployments["capstream-decode"])[0])
    declared = kafka_topics[topic]
    config = {} if change is None else {**declared["spec"]["config"], **change}
    faulty = {**kafka_topics, topic: {**declared, "spec": {**declared["spec"], "config": config}}}
    problems = topic_problems(faulty, partitions)
    assert any(mention in p for p in problems), problems


def test_topic_check_catches_a_missing_topic_and_wrong_partitions(
    kafka_topics: dict[str, Manifest], partitions: dict[str, int], deployments: dict[str, Manifest], env_of: Any
) -> None:
    env_of(containers(deployments["capstream-decode"])[0])
    missing = {k: v for k, v in kafka_topics.items() if k != "media.objects.dlq"}
    assert topic_problems(missing, partitions) == ["topics.yaml has no KafkaTopic media.objects.dlq (decode uses it)"]
    fewer = {**partitions, "media.captions": 6}
    assert topic_problems(kafka_topics, fewer) == ["media.captions: 12 partitions, kafka-init has 6"]


def test_every_worker_stage_has_a_deployment(deployments: dict[str, Manifest]) -> None:
    assert stage_deployment_problems(deployments) == []


def scaling_problems(deployments: dict[str, Manifest], scaled_objects: dict[str, Manifest], env_of: Any) -> list[str]:
    """Each worker Deployment's ScaledObject has one Kafka trigger per consumer group of its
    stage (every ``ConsumerSpec`` of the registry: embed and index run two), on that group's
    topic, as the worker resolves them from its environment; the bridge is not autoscaled."""
    targets = {so["spec"]["scaleTargetRef"]["name"]: so for so in scaled_objects.values()}
    problems = []
    for name, deployment in deployments.items():
        stage = worker_stage(deployment)
        if stage is None:
            continue
        env = env_of(containers(deployment)[0])
        if stage == "s3-events":
            # One bridge, not autoscaled: its topic's partitions are SeaweedFS's choice.
            if name in targets or deployment["spec"]["replicas"] != 1:
                problems.append(f"{name}: the bridge runs one replica, not autoscaled")
            continue
        if name not in targets:
            problems.append(f"{name}: no ScaledObject")
            continue
        triggers = kafka_triggers(targets[name])
        scaled_on = {(t["consumerGroup"], t["topic"]) for t in triggers}
        problems += [f"{name}: no trigger on the lag of {g} on {t}" for g, t in sorted(stage_inputs(stage) - scaled_on)]
        problems += [f"{name}: {stage} does not consume {t} as {g}" for g, t in sorted(scaled_on - stage_inputs(stage))]
        for trigger in triggers:
            if trigger["bootstrapServers"] != env["CAPSTREAM_KAFKA_BOOTSTRAP"]:
                problems.append(f"{name}: trigger bootstrap {trigger['bootstrapServers']} is not the worker's")
            if trigger["offsetResetPolicy"] != OFFSET_RESET:
                problems.append(f"{name}: trigger offsetResetPolicy is not {OFFSET_RESET}")
    return problems


def test_each_stage_scales_on_its_own_group_and_topic(
    deployments: dict[str, Manifest], scaled_objects: dict[str, Manifest], env_of: Any
) -> None:
    assert scaling_problems(deployments, scaled_objects, env_of) == []
    assert len(kafka_triggers(scaled_objects["capstream-embed"])) == 2  # captions and transcripts


def _without_trigger(scaled_object: Manifest, group: str) -> Manifest:
    spec = scaled_object["spec"]
    kept = [t for t in spec["triggers"] if t.get("metadata", {}).get("consumerGroup") != group]
    assert len(kept) < len(spec["triggers"]), group
    return {**scaled_object, "spec": {**spec, "triggers": kept}}


@pytest.mark.parametrize(
    ("scaled_object", "group", "mention"),
    [
        (
            "capstream-embed",
            "capstream-embed-speech",
            "no trigger on the lag of capstream-embed-speech on media.transcripts",
        ),
        ("capstream-index", "capstream-index-removals", "no trigger on the lag of capstream-index-removals"),
        (
            "capstream-transcribe",
            "capstream-transcribe",
            "no trigger on the lag of capstream-transcribe on media.speech",
        ),
    ],
)
def test_scaling_check_catches_a_group_without_a_trigger(
    deployments: dict[str, Manifest],
    scaled_objects: dict[str, Manifest],
    env_of: Any,
    scaled_object: str,
    group: str,
    mention: str,
) -> None:
    faulty = {**scaled_objects, scaled_object: _without_trigger(scaled_objects[scaled_object], group)}
    problems = scaling_problems(deployments, faulty, env_of)
    assert any(mention in p for p in problems), problems


def test_max_replicas_within_partitions(scaled_objects: dict[str, Manifest], partitions: dict[str, int]) -> None:
    assert partitions["media.segments"] > 1, "kafka-init was not parsed"
    for name, so in scaled_objects.items():
        spec = so["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        for trigger in kafka_triggers(so):
            assert spec["maxReplicaCount"] <= topic_partitions(trigger["topic"], partitions), (name, trigger["topic"])


def test_lag_thresholds_are_marked_and_fill_index_batches(scaled_objects: dict[str, Manifest]) -> None:
    for so in scaled_objects.values():
        for trigger in kafka_triggers(so):
            assert int(trigger["lagThreshold"]) > 0
    index_embeddings = next(
        t for t in kafka_triggers(scaled_objects["capstream-index"]) if t["topic"] == "media.embeddings"
    )
    assert int(index_embeddings["lagThreshold"]) >= IndexSettings().index_batch_rows
    text = (K8S / "autoscaling.yaml").read_text()
    threshold_lines = [line for line in text.splitlines() if re.match(r"\s*(lagThreshold|threshold):", line)]
    assert threshold_lines and all("TUNE" in line for line in threshold_lines)


def test_worker_probes_hit_the_metrics_port(deployments: dict[str, Manifest], env_of: Any) -> None:
    for name, deployment in deployments.items():
        if worker_stage(deployment) is None:
            continue
        (container,) = containers(deployment)
        env_of(container)
        settings = CommonSettings()
        assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0", name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/metrics", (name, probe)
            assert ports.get(get["port"], get["port"]) == settings.metrics_port, (name, probe)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.metrics_port)


def test_grace_period_covers_drain_and_commit(deployments: dict[str, Manifest], env_of: Any) -> None:
    for name, deployment in deployments.items():
        if worker_stage(deployment) is None:
            continue
        env_of(containers(deployment)[0])
        settings = CommonSettings()
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= settings.drain_timeout_s + settings.commit_timeout_s, name


def test_env_names_are_capstream_settings(deployments: dict[str, Manifest], config_maps: dict[str, Manifest]) -> None:
    known = settings_env_names()
    for deployment in deployments.values():
        for container in containers(deployment):
            names = {n for n in container_env(container, config_maps) if n.startswith("CAPSTREAM_")}
            assert names <= known, sorted(names - known)


def test_every_container_has_resources(deployments: dict[str, Manifest], env_of: Any) -> None:
    for name, deployment in deployments.items():
        for container in containers(deployment):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
    (decode,) = containers(deployments["capstream-decode"])
    env_of(decode)
    in_flight = DecodeSettings().decode_max_in_flight
    limit = decode["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) * 2**20 >= in_flight * DECODE_PEAK_RSS * DECODE_MEMORY_HEADROOM


def test_vllm_servers_serve_the_workers_models(
    manifests: list[Manifest],
    deployments: dict[str, Manifest],
    scaled_objects: dict[str, Manifest],
    env_of: Any,
) -> None:
    services = of_kind(manifests, "Service")
    env_of(containers(deployments["capstream-caption"])[0])
    # Every model stage of the registry (caption, transcribe, embed), from the shared ConfigMap.
    servings = [s.load_settings().serving for s in REGISTRY if issubclass(s.settings, ModelStageSettings)]
    assert {s.stage for s in servings} >= {"caption", "transcribe", "embed"}
    for serving in servings:
        assert serving.backend == "openai", serving.stage
        url = re.fullmatch(r"http://([^:/]+):(\d+)/v1", serving.openai_url)
        assert url, serving.openai_url
        host, port = url.groups()
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        (server,) = containers(deployments[host])
        assert server["args"][0] == serving.model
        assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
        queries = [
            t["metadata"]["query"] for t in scaled_objects[host]["spec"]["triggers"] if t["type"] == "prometheus"
        ]
        assert any("vllm:num_requests_waiting" in q for q in queries)
        assert all(f'model_name="{serving.served_name}"' in q for q in queries)


def test_vllm_servers_run_the_release(deployments: dict[str, Manifest]) -> None:
    """Every ``vllm serve`` container runs the tested vLLM release: its image, or one that
    compose builds FROM it (Whisper's, with vLLM's audio extra; test_docker_compose holds that
    build to the release)."""
    built_on_release = {
        str(svc["image"]).split(":", 1)[0]
        for svc in cc.load(cc.COMPOSE)["services"].values()
        if cc.runs_vllm_serve(svc) and (svc.get("build") or {}).get("args", {}).get("VLLM_IMAGE") == ev.VLLM_IMAGE
    }
    servers = [c for d in deployments.values() for c in containers(d) if c.get("command") == ["vllm", "serve"]]
    assert len(servers) == 3
    for server in servers:
        assert server["image"] == ev.VLLM_IMAGE or server["image"] in built_on_release, server["image"]


def test_search_service_serves_capstream_serve(
    manifests: list[Manifest], deployments: dict[str, Manifest], env_of: Any
) -> None:
    (container,) = containers(deployments["capstream-search"])
    assert container["command"] + container["args"] == ["capstream", "serve"]
    env_of(container)
    settings = SearchSettings()
    assert settings.serve_host == "0.0.0.0"
    (port,) = container["ports"]
    assert port["containerPort"] == settings.serve_port
    (service_port,) = of_kind(manifests, "Service")["capstream-search"]["spec"]["ports"]
    assert service_port["port"] == settings.serve_port and service_port["targetPort"] == port["name"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    text = (K8S / "kustomization.yaml").read_text()
    optional = set(re.findall(r"^\s*#\s*-\s*(\S+\.yaml)\s*$", text, re.MULTILINE))
    listed = set(kustomization["resources"]) | optional
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    generated = [f for gen in kustomization["configMapGenerator"] for f in gen["files"]]
    assert all((K8S / f).is_file() for f in generated)


# -- network policy: who may open a connection to which pod port ------------------------------
OUTSIDE = {"kubernetes.io/metadata.name": "someone-else"}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def admitted(
    policies: list[Manifest],
    pod: dict[str, str],
    port: int,
    source_ns: dict[str, str] | None,
    source_pod: dict[str, str],
) -> bool:
    """Whether Kubernetes' ingress rules let a connection through: ``source_ns`` None is a pod of
    capstream's own namespace (labels ``source_pod``), else another namespace's labels."""
    for policy in policies:
        if not _selects(policy["spec"]["podSelector"], pod):
            continue
        for rule in policy["spec"].get("ingress") or []:
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if (
                    "namespaceSelector" in peer
                    and source_ns is not None
                    and _selects(peer["namespaceSelector"], source_ns)
                ):
                    return True
                if "podSelector" in peer and "namespaceSelector" not in peer and source_ns is None:
                    if _selects(peer["podSelector"], source_pod):
                        return True
    return False


def network_problems(manifests: list[Manifest]) -> list[str]:
    policies = list(of_kind(manifests, "NetworkPolicy").values())
    problems = []
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies):
        problems.append("no default deny of ingress")
    worker = {"app.kubernetes.io/component": "decode"}
    for name, deployment in of_kind(manifests, "Deployment").items():
        pod = deployment["spec"]["template"]["metadata"]["labels"]
        for container in containers(deployment):
            for port in (p["containerPort"] for p in container.get("ports") or []):
                public = admitted(policies, pod, port, OUTSIDE, {})
                if name == "capstream-search" and port == 8686:
                    if not public:
                        problems.append(f"{name}:{port} is not reachable from outside")
                    continue
                if public:
                    problems.append(f"{name}:{port} is open to any namespace")
                if not admitted(policies, pod, port, MONITORING, {}):
                    problems.append(f"{name}:{port} cannot be scraped from the monitoring namespace")
                model_server = pod.get("app.kubernetes.io/component") == "model-server"
                if model_server and not admitted(policies, pod, port, None, worker):
                    problems.append(f"{name}:{port} cannot be reached by the workers")
    return problems


def test_network_policy_admits_each_port_from_where_it_is_used(manifests: list[Manifest]) -> None:
    assert network_problems(manifests) == []


def test_network_check_catches_an_open_model_server(manifests: list[Manifest]) -> None:
    opened = [dict(d) for d in manifests]
    for doc in opened:
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "capstream-model-servers-from-capstream":
            doc["spec"] = {**doc["spec"], "ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}]}]}
    assert any("vllm-embed:8000 is open to any namespace" in p for p in network_problems(opened))
    no_deny = [d for d in manifests if d["metadata"]["name"] != "capstream-default-deny-ingress"]
    assert "no default deny of ingress" in network_problems(no_deny)


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    check_dashboard(dashboard)


def test_dashboard_check_catches_a_metric_that_does_not_exist(dashboard: dict[str, Any]) -> None:
    broken = {
        **dashboard,
        "panels": [*dashboard["panels"], {"targets": [{"expr": "rate(capstream_frames_total[5m])"}]}],
    }
    with pytest.raises(AssertionError, match="capstream_frames_total"):
        check_dashboard(broken)


def test_vllm_metric_names_exist_in_vllm() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    loggers = (Path(spec.origin).parent / "v1" / "metrics" / "loggers.py").read_text()
    for name in VLLM_METRICS:
        assert f'name="{name}"' in loggers, name


def s3_secret_problems(deployments: dict[str, Manifest]) -> list[str]:
    """serve signs links with read-only credentials of its own; the workers never get them."""
    problems = []
    for name, deployment in deployments.items():
        secrets = {
            ref["secretRef"]["name"]
            for c in containers(deployment)
            for ref in c.get("envFrom", [])
            if "secretRef" in ref
        }
        serves = any(c.get("args", [])[:1] == ["serve"] for c in containers(deployment))
        if serves and secrets != {"capstream-serve-s3"}:
            problems.append(f"{name}: serve reads S3 secrets {sorted(secrets)}, want only capstream-serve-s3")
        if not serves and "capstream-serve-s3" in secrets:
            problems.append(f"{name}: a worker reads serve's read-only secret")
    return problems


def test_serve_signs_with_read_only_credentials_of_its_own(deployments: dict[str, Manifest]) -> None:
    assert s3_secret_problems(deployments) == []
    planted = copy.deepcopy(deployments)
    serve = next(d for d in planted.values() if any(c.get("args", [])[:1] == ["serve"] for c in containers(d)))
    containers(serve)[0]["envFrom"][1]["secretRef"]["name"] = "capstream-s3"
    assert any("want only capstream-serve-s3" in p for p in s3_secret_problems(planted))
