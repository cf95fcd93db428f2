"""``deploy/`` agrees with the gateway: ports, probe paths, spool path, grace periods, IAM actions.

Docker and a cluster are not available here, so the files are parsed; the paths they probe are asked of
a running gateway, and the configurations they ship are loaded by the gateway's own loader.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml

from gateway.cli import _parser
from gateway.config import load_config
from gateway.config.frontdoor import MAX_DEFAULT_CONNECTIONS
from gateway.service.gateway import Gateway
from gateway.service.preflight import PROBE_PREFIX
from gateway.service.resources import FILES_PER_CONNECTION
from gateway.settings import AttachmentSettings, QueueMode, QueueSettings, Settings, SmtpSettings

from ..helpers import ROOT
from ..helpers import http_get as get

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SHARED = KUBERNETES / "shared-queue"  # sqs mode: a Deployment and its autoscaler, no volumes


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage, continuation lines joined, comments dropped."""
    text = (DEPLOY / "container" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [(op, args.strip()) for op, _, args in (line.partition(" ") for line in lines)]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def instruction(name: str) -> str:
    [args] = [args for op, args in dockerfile() if op == name]
    return args


def manifests(directory: Path = KUBERNETES) -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes document of a kustomization's directory, by kind."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found.setdefault(document["kind"], []).append(document)
    return found


def load_text(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def container_settings() -> Settings:
    return load_config(DEPLOY / "container" / "config.toml")


@pytest.fixture
def cluster_settings(tmp_path: Path) -> Settings:
    [config_map] = manifests()["ConfigMap"]
    return load_text(config_map["data"]["config.toml"], tmp_path)


@pytest.fixture
def pod() -> dict[str, Any]:
    [stateful_set] = manifests()["StatefulSet"]
    spec: dict[str, Any] = stateful_set["spec"]["template"]["spec"]
    return spec


def serve_args(argv: list[str]) -> Path:
    """The configuration path a command line would serve with, parsed by the real CLI parser."""
    args = _parser().parse_args(argv)
    assert args.command == "serve"
    path: Path = args.config
    return path


async def probe_paths_answer(paths: set[str], gateway: Gateway) -> None:
    assert gateway.http is not None
    for path in paths:
        status, _ = await get(gateway.http.port, path)
        assert status == 200, path


# -- the container ----------------------------------------------------------------------------------------


def test_the_image_serves_its_own_config_as_a_non_root_user(container_settings: Settings) -> None:
    entrypoint, command = json.loads(instruction("ENTRYPOINT")), json.loads(instruction("CMD"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert entrypoint == ["mail-gateway"] and 'mail-gateway = "gateway.cli:main"' in pyproject
    config_path = serve_args(command)
    copies = [args.split() for op, args in dockerfile() if op == "COPY" and "--from" not in args]
    assert ["deploy/container/config.toml", str(config_path)] in copies
    user = instruction("USER").split(":")[0]
    assert user not in ("0", "root")
    assert f"--uid {user}" in (DEPLOY / "container" / "Dockerfile").read_text()


def test_the_image_exposes_the_configured_ports_and_spool(container_settings: Settings) -> None:
    assert container_settings.smtp.host == "0.0.0.0"  # reachable through the published port
    assert container_settings.http.listen is not None
    exposed = {int(port) for port in instruction("EXPOSE").split()}
    assert exposed == {container_settings.smtp.port, container_settings.http.listen[1]}
    assert json.loads(instruction("VOLUME")) == [str(container_settings.queue.path)]
    assert container_settings.queue.path == QueueSettings().path  # the documented default


async def test_the_image_health_check_asks_the_real_endpoint(
    container_settings: Settings, gateway: Gateway
) -> None:
    check = instruction("HEALTHCHECK")
    found = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
    assert found is not None, check
    assert container_settings.http.listen is not None
    assert int(found.group(1)) == container_settings.http.listen[1]
    await probe_paths_answer({found.group(2)}, gateway)


# -- Kubernetes -------------------------------------------------------------------------------------------


def test_container_ports_match_the_configuration(cluster_settings: Settings, pod: dict[str, Any]) -> None:
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert cluster_settings.http.listen is not None
    assert ports == {"smtp": cluster_settings.smtp.port, "http": cluster_settings.http.listen[1]}
    assert cluster_settings.smtp.host == cluster_settings.http.listen[0] == "0.0.0.0"  # reachable in the pod


async def test_probes_ask_the_real_endpoints(pod: dict[str, Any], gateway: Gateway) -> None:
    [container] = pod["containers"]
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (liveness["path"], readiness["path"]) == ("/healthz", "/readyz")
    assert liveness["port"] == readiness["port"] == "http"
    await probe_paths_answer({liveness["path"], readiness["path"]}, gateway)


def test_the_spool_is_on_a_persistent_volume(cluster_settings: Settings, pod: dict[str, Any]) -> None:
    [stateful_set] = manifests()["StatefulSet"]
    [container] = pod["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claims = {claim["metadata"]["name"] for claim in stateful_set["spec"]["volumeClaimTemplates"]}
    [spool] = [name for name, path in mounts.items() if path == str(cluster_settings.queue.path)]
    assert spool in claims
    config = serve_args(container["args"])
    assert mounts["config"] == str(config.parent)
    [config_volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    [config_map] = manifests()["ConfigMap"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config.name in config_map["data"]


def test_the_grace_period_covers_the_drain(cluster_settings: Settings, pod: dict[str, Any]) -> None:
    [container] = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert pod["terminationGracePeriodSeconds"] >= pause + cluster_settings.queue.shutdown_grace + 10


def test_the_pod_runs_as_the_image_user(pod: dict[str, Any]) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == instruction("USER").split(":")[0]
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_load_balancer_speaks_proxy_protocol_to_the_smtp_port(
    cluster_settings: Settings, pod: dict[str, Any]
) -> None:
    services = {s["metadata"]["name"]: s for s in manifests()["Service"]}
    balancer = services["mail-gateway-smtp"]
    annotations = balancer["metadata"]["annotations"]
    assert balancer["spec"]["type"] == "LoadBalancer"
    [port] = balancer["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (25, "smtp")
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    assert cluster_settings.access.proxy_protocol and cluster_settings.access.proxy_trusted
    assert cluster_settings.http.listen is not None
    prefix = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-"
    assert int(annotations[prefix + "port"]) == cluster_settings.http.listen[1]
    assert annotations[prefix + "path"] == "/readyz"
    labels = pod_labels()
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
    assert services["mail-gateway"]["spec"]["ports"][0]["targetPort"] == "http"


def test_the_disruption_budget_and_kustomization_cover_the_pods() -> None:
    [budget] = manifests()["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels().items()
    assert budget["spec"]["maxUnavailable"] == 1
    [kustomization] = manifests()["Kustomization"]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    [stateful_set] = manifests()["StatefulSet"]
    [account] = manifests()["ServiceAccount"]
    assert stateful_set["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def pod_labels() -> dict[str, str]:
    [stateful_set] = manifests()["StatefulSet"]
    labels: dict[str, str] = stateful_set["spec"]["template"]["metadata"]["labels"]
    assert stateful_set["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def test_the_shared_queue_pods_keep_nothing_of_their_own(tmp_path: Path) -> None:
    """sqs mode: a Deployment (no StatefulSet, no claim); its only writable directories are scratch."""
    found = manifests(SHARED)
    assert "StatefulSet" not in found
    [config_map] = found["ConfigMap"]
    settings = load_text(config_map["data"]["config.toml"], tmp_path)
    assert settings.queue.mode == QueueMode.SQS and settings.queue.queue_url and settings.queue.table
    [deployment] = found["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert "volumeClaimTemplates" not in deployment["spec"]
    assert all(set(volume) & {"configMap", "emptyDir"} for volume in pod["volumes"])
    [container] = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert str(settings.queue.path) in mounts  # the scratch directory, an emptyDir
    assert mounts[str(serve_args(container["args"]).parent)] == "config"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert settings.http.listen is not None
    assert ports == {"smtp": settings.smtp.port, "http": settings.http.listen[1]}
    assert settings.access.proxy_protocol and settings.access.proxy_trusted
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pause + settings.queue.shutdown_grace + 10
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_autoscaler_owns_the_shared_queue_deployment() -> None:
    found = manifests(SHARED)
    [deployment], [autoscaler] = found["Deployment"], found["HorizontalPodAutoscaler"]
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # a fixed count would fight the autoscaler
    assert autoscaler["spec"]["minReplicas"] >= 2  # behind one MX name, never a single pod
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in found["Service"]}
    annotations = services["mail-gateway-smtp"]["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    for selector in [s["spec"]["selector"] for s in services.values()] + [
        found["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ]:
        assert selector.items() <= labels.items()
    [kustomization] = found["Kustomization"]
    assert set(kustomization["resources"]) == {p.name for p in SHARED.glob("*.yaml")} - {"kustomization.yaml"}
    [account] = found["ServiceAccount"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


# -- AWS --------------------------------------------------------------------------------------------------


def policy_actions() -> dict[str, list[str]]:
    """Each allowed action and the resources it is allowed on."""
    policy = json.loads((DEPLOY / "aws" / "iam-policy.json").read_text())
    allowed: dict[str, list[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for action in actions:
            assert "*" not in action
            allowed.setdefault(action, []).extend(resources)
    return allowed


def test_the_policy_allows_what_the_gateway_calls_and_no_more() -> None:
    allowed = policy_actions()
    connect_operations = set(botocore.session.get_session().get_service_model("connect").operation_names)
    used = {"StartEmailContact", "DescribeInstance", "SearchEmailAddresses", "DescribeContactFlow"}
    assert used <= connect_operations  # spelled as the service spells them
    assert {a.split(":", 1)[1] for a in allowed if a.startswith("connect:")} == used
    assert {a for a in allowed if a.startswith("s3:")} == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"}
    prefix = AttachmentSettings("b").prefix
    for action in ("s3:PutObject", "s3:GetObject"):
        assert allowed[action] == [f"arn:aws:s3:::example-connect-attachments/{prefix}*"]
    assert allowed["s3:DeleteObject"] == [f"arn:aws:s3:::example-connect-attachments/{prefix}{PROBE_PREFIX}*"]
    for resource in allowed["connect:StartEmailContact"]:
        assert re.fullmatch(r"arn:aws:connect:[\w-]+:\d{12}:instance/[\w-]+(/\*)?", resource)


def test_the_lifecycle_outlives_every_retry_and_link() -> None:
    lifecycle = json.loads((DEPLOY / "aws" / "bucket-lifecycle.json").read_text())
    [rule] = lifecycle["Rules"]
    assert rule["Filter"]["Prefix"] == AttachmentSettings("b").prefix
    needed = QueueSettings().max_age + AttachmentSettings("b").url_expiry_seconds
    assert rule["Expiration"]["Days"] * 86400 >= needed
    encryption = json.loads((DEPLOY / "aws" / "bucket-encryption.json").read_text())
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


# -- systemd and Postfix ----------------------------------------------------------------------------------


def test_the_systemd_unit_is_non_root_and_waits_for_the_drain() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "mail-gateway.service")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/mail-gateway")
    serve_args(command[1:])
    reload = shlex.split(service["ExecReload"])  # systemctl reload: the same file, checked, then SIGHUP
    assert reload[:2] == [command[0], "reload"] and reload[2:] == command[2:]
    assert service["User"] not in ("root", "0")
    assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert service["ReadWritePaths"] == str(QueueSettings().path)
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    timeout = float(service["TimeoutStopSec"].removesuffix("s"))
    assert timeout > QueueSettings().shutdown_grace
    # the gateway raises its soft open-files limit to this hard one: room for the default connections
    assert int(service["LimitNOFILE"]) >= FILES_PER_CONNECTION * MAX_DEFAULT_CONNECTIONS


def test_the_postfix_example_relays_the_domain_through_the_transport_map() -> None:
    main = dict(
        line.split(" = ", 1)
        for line in (DEPLOY / "postfix" / "main.cf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert main["transport_maps"] == "hash:/etc/postfix/transport"
    assert int(main["message_size_limit"]) <= SmtpSettings().max_message_size
    [entry] = [
        line.split()
        for line in (DEPLOY / "postfix" / "transport").read_text().splitlines()
        if line[:1] != "#"
    ]
    assert entry[0] == main["relay_domains"]
    assert entry[1].startswith("smtp:[")
