"""The cloud's deployment files: valid against their schemas, and in step with the code.

No container engine runs here, so the files are checked, not run:

- every Kubernetes object in ``deploy/k8s`` validates against the Kubernetes OpenAPI
  schema (``kubernetes-validate``, strict: unknown fields are errors) of the oldest
  Kubernetes the manifests support (1.32, which made the StatefulSet pod-index label
  stable) and of the newest the validator knows;
- ``deploy/cloud/compose.yaml`` validates against the Compose Specification's JSON schema
  (``tests/fixtures/deploy/compose-spec.json``; see the README there);
- every ``edgewatch-cloud`` command in compose, the manifests and the broker config parses
  with the real parser (``cloud.cli.build_parser``); every ``EDGEWATCH_CLOUD_*`` variable is
  a field of ``cloud.settings.Settings`` and the values each process gets validate; the
  probes' paths are routes of the real app and their ports the ones the API listens on;
  selectors, names and references inside the manifests point at something that exists.

The Mosquitto config itself runs on a real broker in
``tests/integration/cloud/test_mosquitto_deploy.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values
from fastapi.routing import APIRoute, iter_route_contexts

from cloud.app import create_app
from cloud.cli import _partition, build_parser
from cloud.errors import ConfigError
from cloud.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).parents[3]
CLOUD = ROOT / "deploy" / "cloud"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "deploy" / "compose-spec.json"
EXAMPLE_ENV = CLOUD / "cloud.example.env"
CLOUD_IMAGE = "edgewatch-cloud"
"""The cloud image's name in compose (tagged) and in the manifests (kustomize rewrites it)."""
K8S_VERSIONS = ("1.32", "1.37")
"""The oldest Kubernetes the manifests support and the newest kubernetes-validate knows."""
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
ENV_NAME = re.compile(r"\bEDGEWATCH_CLOUD_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\}")
POD_INDEX = "$(POD_INDEX)"
REFUSED_KEY = "secret_key: the development placeholder or a key shorter than 32"


# ---- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    path: Path
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.name}:{self.kind}/{self.name}"


def _manifests() -> list[Manifest]:
    return [
        Manifest(path, obj)
        for path in sorted(K8S.glob("*.yaml"))
        if path != KUSTOMIZATION
        for obj in yaml.safe_load_all(path.read_text())
        if obj
    ]


MANIFESTS = _manifests()


def by_kind(*kinds: str) -> list[Manifest]:
    return [m for m in MANIFESTS if m.kind in kinds]


def named(kind: str, name: str) -> Manifest:
    found = [m for m in MANIFESTS if m.kind == kind and m.name == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_template(m: Manifest) -> dict[str, Any]:
    template: dict[str, Any] = m.obj["spec"]["template"]
    return template


def cloud_containers() -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for m in by_kind(*WORKLOADS):
        for c in pod_template(m)["spec"]["containers"]:
            if c["image"] == CLOUD_IMAGE:
                yield m, c


def container(kind: str, name: str) -> dict[str, Any]:
    (c,) = (c for m, c in cloud_containers() if (m.kind, m.name) == (kind, name))
    return c


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CLOUD / "compose.yaml").read_text())
    return loaded


def compose_cloud_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).split(":")[0] == CLOUD_IMAGE
    }


def parse(argv: list[str], where: str) -> Any:
    """``argv`` through the real ``edgewatch-cloud`` parser; a failure names ``where``."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `edgewatch-cloud {shlex.join(argv)}` does not parse")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``EDGEWATCH_CLOUD_*`` from the test process's own environment."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with ``env`` (and nothing else) would get."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


# ---- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=str)
def test_every_kubernetes_object_validates_against_the_kubernetes_schema(
    manifest: Manifest, version: str
) -> None:
    try:
        kubernetes_validate.validate(manifest.obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest} against Kubernetes {version}: {where}: {exc.message}")


def test_the_kubernetes_validator_refuses_an_unknown_field() -> None:
    """Strict mode is what makes the check above catch a misspelt field."""
    api = dict(named("Deployment", "edgewatch-api").obj)
    api["spec"] = {**api["spec"], "replica": 3}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(api, K8S_VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_manifest_and_sets_the_cloud_image() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(m.path.name for m in {m.path: m for m in MANIFESTS}.values())
    assert len(set(listed)) == len(listed)
    assert [i["name"] for i in kustomization["images"]] == [CLOUD_IMAGE]
    assert {m.obj["metadata"].get("namespace") for m in MANIFESTS} == {None}
    assert kustomization["namespace"] == named("Namespace", "edgewatch").name


def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_validates_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    errors = sorted(_compose_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_the_compose_schema_refuses_a_misplaced_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["restart_policy"] = "always"  # a deploy: key, not a service one
    assert not _compose_validator().is_valid(broken)


# ---- commands ----------------------------------------------------------------------------------


def _commands_in_comments(path: Path) -> Iterator[list[str]]:
    """``edgewatch-cloud ...`` commands in a file's comments (``\\`` continues a line; a
    ``< file`` redirection is left out)."""
    text = re.sub(r"\\\n#\s*", " ", path.read_text())
    for line in text.splitlines():
        m = re.match(r"#\s+edgewatch-cloud (.*)", line)
        if m:
            yield shlex.split(m.group(1).split(" < ")[0])


def test_every_cloud_command_in_compose_parses(compose: dict[str, Any]) -> None:
    services = compose_cloud_services(compose)
    assert {"migrate", "api", "ingest", "scorer", "deliver", "reports"} <= {
        svc["command"][0] for svc in services.values()
    }
    for name, svc in services.items():
        args = parse(svc["command"], f"compose service {name}")
        if args.command == "scorer":
            assert _partition(args.partition) == (0, 1), "one node scores every site"


def test_every_cloud_command_in_the_manifests_parses() -> None:
    commands = set()
    for m, c in cloud_containers():
        assert "command" not in c, f"{m}: the image's entrypoint is edgewatch-cloud"
        if m.kind == "StatefulSet":
            continue  # the scorer, below: its arguments depend on the pod's ordinal
        assert not any("$(" in a for a in c["args"]), m
        commands.add(parse(c["args"], str(m)).command)
    assert {"migrate", "api", "ingest", "deliver", "reports"} <= commands


def test_each_scorer_pod_takes_its_own_partition_and_together_all() -> None:
    scorer = named("StatefulSet", "edgewatch-scorer")
    c = container("StatefulSet", "edgewatch-scorer")
    replicas = scorer.obj["spec"]["replicas"]
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    partitions = []
    for ordinal in range(replicas):
        argv = [a.replace(POD_INDEX, str(ordinal)) for a in c["args"]]
        args = parse(argv, f"{scorer} pod {ordinal}")
        assert args.command == "scorer"
        partitions.append(_partition(args.partition))
    assert partitions == [(i, replicas) for i in range(replicas)]


def test_the_command_the_broker_config_tells_the_operator_to_run_parses() -> None:
    (argv,) = _commands_in_comments(CLOUD / "mosquitto.conf")
    args = parse(argv, "the comment in mosquitto.conf")
    assert (args.command, args.admin_command) == ("admin", "mosquitto-files")
    assert args.ingest_password_stdin


def test_the_admin_commands_the_deploy_readme_shows_parse(compose: dict[str, Any]) -> None:
    cloud = compose_cloud_services(compose)
    shown = 0
    for line in (ROOT / "deploy" / "README.md").read_text().splitlines():
        m = re.search(r"docker compose run --rm (\S+)(.*)", line)
        if m and m.group(1) in cloud:
            argv = shlex.split(m.group(2).split("&&")[0], comments=True)
            parse(argv or cloud[m.group(1)]["command"], f"deploy/README.md: {line.strip()}")
            shown += 1
    assert shown >= 5


def test_the_image_runs_edgewatch_cloud_as_a_user_without_privileges() -> None:
    dockerfile = (CLOUD / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"][CLOUD_IMAGE] == "cloud.cli:main"
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["edgewatch-cloud"\]$', dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    extras = re.search(r'pip install "\.\[([a-z,]+)\]"', dockerfile)
    assert extras is not None
    assert "cloud" in extras.group(1).split(",")
    assert set(extras.group(1).split(",")) <= set(project["optional-dependencies"])
    for m, _c in cloud_containers():
        security = pod_template(m)["spec"]["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == int(users[-1].split(":")[0])


# ---- settings ----------------------------------------------------------------------------------


def _files_naming_settings() -> list[Path]:
    return [
        EXAMPLE_ENV,
        ROOT / "deploy" / "README.md",
        CLOUD / "mosquitto.conf",
        CLOUD / "compose.yaml",
        CLOUD / "Dockerfile",
        *sorted(K8S.glob("*.yaml")),
    ]


def test_every_setting_named_in_the_deploy_files_exists() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for path in _files_naming_settings():
        named_here = set(ENV_NAME.findall(path.read_text()))
        unknown = {n for n in named_here if n.removeprefix(ENV_PREFIX) not in fields}
        assert not unknown, f"{path.relative_to(ROOT)} names settings that do not exist: {unknown}"


def test_the_example_env_documents_every_setting() -> None:
    """The README and ``cloud/settings.py`` send operators to it for every setting."""
    documented = {n.removeprefix(ENV_PREFIX) for n in ENV_NAME.findall(EXAMPLE_ENV.read_text())}
    missing = {f for f in Settings.model_fields if f.upper() not in documented}
    assert not missing, f"add to {EXAMPLE_ENV.name}: {sorted(missing)}"


def test_the_example_env_refuses_its_placeholder_secret_and_is_valid_with_a_real_one(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=REFUSED_KEY):
        load_settings(EXAMPLE_ENV)
    env = tmp_path / "cloud.env"
    env.write_text(
        EXAMPLE_ENV.read_text().replace(
            "EDGEWATCH_CLOUD_SECRET_KEY=REPLACE-ME",
            f"EDGEWATCH_CLOUD_SECRET_KEY={secrets.token_urlsafe(48)}",
        )
    )
    assert load_settings(env).environment == "production"


def _interpolated(value: object) -> str:
    """A compose value with each ``${VAR...}`` as a value a shell-safe password could be."""
    return INTERPOLATION.sub("interpolated-value", str(value))


def test_each_compose_cloud_service_gets_valid_settings(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    """What a container would get: cloud.env (the example, with a real key), then the
    service's own environment on top."""
    example = {k: v for k, v in dotenv_values(EXAMPLE_ENV).items() if v is not None}
    example["EDGEWATCH_CLOUD_SECRET_KEY"] = secrets.token_urlsafe(48)
    for name, svc in compose_cloud_services(compose).items():
        assert svc["env_file"] == "cloud.env", name
        env = example | {k: _interpolated(v) for k, v in svc["environment"].items()}
        with pytest.MonkeyPatch.context() as mp:
            settings = settings_from(env, mp)
        assert settings.environment == "production", name
        if svc["command"][0] == "api":
            api_port = settings.api_port
            assert settings.api_host == "0.0.0.0"  # noqa: S104 - inside the container
            assert any(p.endswith(f":{api_port}") for p in svc["ports"]), svc["ports"]
            check = " ".join(svc["healthcheck"]["test"])
            assert f"http://127.0.0.1:{api_port}/readyz" in check


def _k8s_env(secret_key: str) -> dict[str, str]:
    config = named("ConfigMap", "edgewatch-cloud").obj["data"]
    secret = named("Secret", "edgewatch-cloud").obj["stringData"]
    return {**config, **secret, "EDGEWATCH_CLOUD_SECRET_KEY": secret_key}


def test_every_cloud_container_takes_its_settings_from_the_configmap_and_the_secret() -> None:
    for m, c in cloud_containers():
        refs = {(k, v["name"]) for ref in c["envFrom"] for k, v in ref.items()}
        assert refs == {("configMapRef", "edgewatch-cloud"), ("secretRef", "edgewatch-cloud")}, m
        assert not {e["name"] for e in c.get("env", [])} & set(_k8s_env("x")), m


def test_the_kubernetes_settings_refuse_the_placeholder_secret_and_validate_with_a_real_one(
    clean_env: pytest.MonkeyPatch,
) -> None:
    placeholder = named("Secret", "edgewatch-cloud").obj["stringData"]["EDGEWATCH_CLOUD_SECRET_KEY"]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(ConfigError, match=REFUSED_KEY):
        settings_from(_k8s_env(placeholder), mp)
    with pytest.MonkeyPatch.context() as mp:
        settings = settings_from(_k8s_env(secrets.token_urlsafe(48)), mp)
    assert settings.tsdb == "influxdb" and settings.mqtt_tls
    assert str(settings.mqtt_ca_file).startswith("/etc/edgewatch/tls/")

    # The API listens where the probes and the Service look; the ingest worker serves its
    # metrics where its probe looks.
    api = container("Deployment", "edgewatch-api")
    assert [p["containerPort"] for p in api["ports"]] == [settings.api_port]
    ingest = container("Deployment", "edgewatch-ingest")
    metrics_port = parse(ingest["args"], "ingest").metrics_port
    assert [p["containerPort"] for p in ingest["ports"]] == [metrics_port]
    assert ingest["livenessProbe"]["httpGet"]["port"] == ingest["ports"][0]["name"]


def test_the_database_url_uses_tls_and_the_ca_the_pods_mount() -> None:
    url = named("Secret", "edgewatch-cloud").obj["stringData"]["EDGEWATCH_CLOUD_DATABASE_URL"]
    query = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))
    assert query["sslmode"] == "verify-full"
    ca_keys = set(named("ConfigMap", "edgewatch-ca").obj["data"])
    for m, c in cloud_containers():
        mounts = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_template(m)["spec"]["volumes"]}
        assert volumes["ca"]["configMap"]["name"] == "edgewatch-ca", m
        assert Path(query["sslrootcert"]).parent == Path(mounts["ca"]), m
    assert Path(query["sslrootcert"]).name in ca_keys


# ---- probes and routes -------------------------------------------------------------------------


def test_the_probed_paths_are_routes_of_the_real_api(
    compose: dict[str, Any], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", tsdb_sqlite_path=tmp_path / "t")
    )
    routes = {
        ctx.path
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute) and "GET" in (ctx.methods or ())
    }
    api = container("Deployment", "edgewatch-api")
    healthcheck = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    probed = {
        api["readinessProbe"]["httpGet"]["path"],
        api["livenessProbe"]["httpGet"]["path"],
        *re.findall(r"http://[^/]+(/\w+)", healthcheck),
    }
    assert probed == {"/readyz", "/healthz"}
    assert probed <= routes


# ---- references inside the manifests -----------------------------------------------------------


def test_selectors_match_the_pods_they_are_meant_for() -> None:
    pods = {(m.kind, m.name): pod_template(m)["metadata"]["labels"] for m in by_kind(*WORKLOADS)}
    for m in by_kind("Deployment", "StatefulSet"):
        selector = m.obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[(m.kind, m.name)].items(), m
    for m in by_kind("Service", "PodDisruptionBudget"):
        selector = m.obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [k for k, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1 and matched[0][0] != "Job", (m, matched)


def test_services_hpa_and_statefulset_point_at_what_exists() -> None:
    api = container("Deployment", "edgewatch-api")
    service = named("Service", "edgewatch-api").obj["spec"]
    assert [p["targetPort"] for p in service["ports"]] == [p["name"] for p in api["ports"]]
    assert api["readinessProbe"]["httpGet"]["port"] == api["ports"][0]["name"]
    hpa = named("HorizontalPodAutoscaler", "edgewatch-ingest").obj["spec"]
    target = named(hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"])
    assert target.obj["spec"]["replicas"] == hpa["minReplicas"]
    assert container("Deployment", "edgewatch-ingest")["resources"]["requests"]["cpu"]
    scorer = named("StatefulSet", "edgewatch-scorer").obj["spec"]
    assert named("Service", scorer["serviceName"]).obj["spec"]["clusterIP"] == "None"


def test_every_cloud_pod_meets_the_restricted_pod_security_standard() -> None:
    labels = named("Namespace", "edgewatch").obj["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for m, c in cloud_containers():
        spec = pod_template(m)["spec"]
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", m
        assert spec["automountServiceAccountToken"] is False, m
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, m
        assert security["readOnlyRootFilesystem"] is True, m
        assert security["capabilities"]["drop"] == ["ALL"], m
        assert {v["mountPath"] for v in c["volumeMounts"]} >= {"/tmp"}, m
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], m


def test_the_secret_holds_only_placeholders() -> None:
    secret = named("Secret", "edgewatch-cloud").obj
    assert "data" not in secret
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, key


# ---- compose's order and state -----------------------------------------------------------------


def test_compose_starts_everything_in_order_and_keeps_state_in_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on a service that does not exist: {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            if how["condition"] == "service_completed_successfully":
                assert services[dep]["restart"] == "no", f"{dep} is a one-shot"
    cloud = compose_cloud_services(compose)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in cloud.items():
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            ), name
        if svc["restart"] != "no":
            assert svc["restart"] == "unless-stopped", name
    # The broker reads the files broker-files writes, as the user that writes them.
    assert services["mosquitto"]["depends_on"]["broker-files"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["broker-files"]["user"].split(":")[0] == "1883"
    declared = set(compose["volumes"])
    used = {
        v.split(":")[0]
        for svc in services.values()
        for v in svc.get("volumes", [])
        if not v.startswith(".")
    }
    assert used == declared
