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
  selectors, names and references inside the manifests point at something that exists;
- the sizing: every container has CPU and memory requests and limits, the autoscalers scale
  Deployments and the ingest one reaches the pod count ``docs/scale-out.md`` derives (read
  from there), the PodDisruptionBudgets select the ingest, API and scorer pods, the scorer
  runs one pod per partition and no autoscaler touches it, the kustomization builds (when
  ``kubectl`` is installed), and the InfluxDB 3 column limit the deploy files tell the
  operator to set holds the ``features`` table the code writes.

The Mosquitto config itself runs on a real broker in
``tests/integration/cloud/test_mosquitto_deploy.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
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

from cloud.api.broker import KEY_HEADER, EmqxLogin
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
PLACEHOLDER = "REPLACE-ME"
"""What the deployment files hold where the operator must put a secret."""
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
    """What a cloud pod gets from the ConfigMap and the Secret, with ``secret_key`` as the
    signing key and every other placeholder of the Secret filled in, as an operator does
    before deploying (the settings refuse a value still holding ``REPLACE-ME``)."""
    config = named("ConfigMap", "edgewatch-cloud").obj["data"]
    secret = {
        key: value.replace(PLACEHOLDER, secrets.token_urlsafe(24))
        for key, value in named("Secret", "edgewatch-cloud").obj["stringData"].items()
    }
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


def test_the_emqx_authenticator_in_the_readme_calls_the_real_endpoint(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The HOCON an operator copies names the API's Service, the route, its key header
    and the body fields the route reads."""
    text = DEPLOY_README.read_text()
    block = text[text.index("```hocon") : text.index("```", text.index("```hocon") + 8)]
    url = urlsplit(re.search(r'url = "([^"]+)"', block)[1])  # type: ignore[index]
    service = named("Service", "edgewatch-api").obj
    namespace = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    assert url.hostname == f"{service['metadata']['name']}.{namespace['namespace']}.svc"
    assert url.port in (None, service["spec"]["ports"][0]["port"])
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", tsdb_sqlite_path=tmp_path / "t")
    )
    posts = {
        ctx.path: ctx.original_route
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute) and "POST" in (ctx.methods or ())
    }
    route = posts[url.path]
    assert f'"{KEY_HEADER}" = "{PLACEHOLDER}"' in block
    fields = set(re.findall(r"^\s+(\w+) = \"\$\{\w+\}\"", block, re.MULTILINE))
    assert fields == set(EmqxLogin.model_fields)
    assert route.endpoint.__module__ == "cloud.api.broker"


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
        assert PLACEHOLDER in value, key


# ---- sizing ------------------------------------------------------------------------------------

SCALE_OUT = ROOT / "docs" / "scale-out.md"
DEPLOY_README = ROOT / "deploy" / "README.md"
QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|[KMGT]i|[kMGT])?")
SCALES = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
SCALES |= {f"{p}i": 1024.0**n for n, p in enumerate("KMGT", 1)}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (``250m``, ``"1"``, ``512Mi``) as a number."""
    m = QUANTITY.fullmatch(str(value))
    assert m is not None, f"not a quantity this test reads: {value!r}"
    return float(m.group(1)) * SCALES[m.group(2)]


def from_scale_out(pattern: str) -> str:
    """The one match of ``pattern`` in docs/scale-out.md (its first group): the figures the
    manifests are sized from are read from there, not repeated here."""
    found = re.findall(pattern, SCALE_OUT.read_text())
    assert len(found) == 1, f"docs/scale-out.md: {len(found)} matches of {pattern!r}"
    return str(found[0])


def workload_of(ref: dict[str, Any]) -> Manifest:
    assert ref["apiVersion"] == "apps/v1", ref
    return named(ref["kind"], ref["name"])


def pods_selected(selector: dict[str, Any]) -> list[Manifest]:
    labels = selector["matchLabels"]
    assert set(selector) == {"matchLabels"}, selector
    return [m for m in by_kind(*WORKLOADS) if labels.items() <= pod_labels(m).items()]


def pod_labels(m: Manifest) -> dict[str, str]:
    labels: dict[str, str] = pod_template(m)["metadata"]["labels"]
    return labels


def scorer_partitions() -> int:
    (arg,) = (a for a in container("StatefulSet", "edgewatch-scorer")["args"] if POD_INDEX in a)
    index, n = arg.split("/")
    assert index == POD_INDEX, arg
    return int(n)


def test_every_container_requests_and_is_limited_in_cpu_and_memory() -> None:
    containers = [
        (m, c)
        for m in by_kind(*WORKLOADS)
        for c in pod_template(m)["spec"].get("initContainers", [])
        + pod_template(m)["spec"]["containers"]
    ]
    assert len(containers) >= len(by_kind(*WORKLOADS))
    for m, c in containers:
        resources = c["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, (str(m), c["name"], resource)


def test_every_autoscaler_scales_a_deployment_on_the_cpu_it_requests() -> None:
    autoscalers = by_kind("HorizontalPodAutoscaler")
    assert {m.name for m in autoscalers} == {"edgewatch-ingest", "edgewatch-api"}
    for m in autoscalers:
        spec = m.obj["spec"]
        target = workload_of(spec["scaleTargetRef"])
        assert target.kind == "Deployment", m
        assert target.obj["spec"]["replicas"] == spec["minReplicas"], m
        assert 1 <= spec["minReplicas"] < spec["maxReplicas"], m
        assert [x["resource"]["name"] for x in spec["metrics"]] == ["cpu"], m
        assert spec["metrics"][0]["resource"]["target"]["type"] == "Utilization", m
        for c in pod_template(target)["spec"]["containers"]:
            assert quantity(c["resources"]["requests"]["cpu"]) > 0, m


def test_the_ingest_autoscaler_covers_the_fleet_that_docs_scale_out_sizes() -> None:
    pods = int(from_scale_out(r"\*\*(\d+) ingest pods with a 1-CPU request\*\*"))
    utilisation = int(from_scale_out(r"at the autoscaler's (\d+) % utilisation target"))
    hpa = named("HorizontalPodAutoscaler", "edgewatch-ingest").obj["spec"]
    assert workload_of(hpa["scaleTargetRef"]).name == "edgewatch-ingest"
    assert hpa["maxReplicas"] >= pods
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == utilisation
    resources = container("Deployment", "edgewatch-ingest")["resources"]
    assert quantity(resources["requests"]["cpu"]) == 1  # the doc's "1-CPU request"
    ingest = container("Deployment", "edgewatch-ingest")
    assert parse(ingest["args"], "ingest").workers == 1, "one worker a pod: 1 CPU a worker"


def test_ingest_the_api_and_the_scorer_have_disruption_budgets_that_select_their_pods() -> None:
    budgets = {}
    for m in by_kind("PodDisruptionBudget"):
        (selected,) = pods_selected(m.obj["spec"]["selector"])
        budgets[(selected.kind, selected.name)] = m.obj["spec"]
    assert set(budgets) == {
        ("Deployment", "edgewatch-ingest"),
        ("Deployment", "edgewatch-api"),
        ("StatefulSet", "edgewatch-scorer"),
    }
    for spec in budgets.values():
        assert set(spec) == {"maxUnavailable", "selector"}, spec
        assert spec["maxUnavailable"] not in (0, "0%"), "a budget that blocks every drain"
    assert budgets[("StatefulSet", "edgewatch-scorer")]["maxUnavailable"] == 1


def test_the_scorer_runs_one_pod_per_partition_and_is_not_autoscaled() -> None:
    scorer = named("StatefulSet", "edgewatch-scorer").obj["spec"]
    assert scorer["replicas"] == scorer_partitions()
    assert 1024 % scorer_partitions() == 0, "N divides the 1,024 site shards evenly"
    targets = {
        (m.obj["spec"]["scaleTargetRef"]["kind"], m.obj["spec"]["scaleTargetRef"]["name"])
        for m in by_kind("HorizontalPodAutoscaler")
    }
    assert ("StatefulSet", "edgewatch-scorer") not in targets


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_kustomization_builds_into_the_manifests_in_the_namespace() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        (m.kind, m.name) for m in MANIFESTS
    )
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "edgewatch", o["metadata"]["name"]


def _features_table_columns() -> set[str]:
    """The columns of InfluxDB's ``features`` table that the gateways can make, found the
    way ingest stores a record (:func:`cloud.ingest.records.to_point`): every point
    feature of every shipped profile, the derived features of the anomaly models the agent
    adds to a window it scores, the window fields, the tags, and ``time``."""
    from types import SimpleNamespace

    from cloud.ingest.records import to_point
    from cloud.registry.refs import DeviceRef, GatewayInfo
    from edge_agent.agent import point_feature_names
    from edge_agent.models import MANIFEST_FILE
    from edge_agent.profiles import builtin_profiles
    from edge_agent.protocol import Record, RecordKind

    names: set[str] = set()
    for profile in builtin_profiles().values():
        # The points a window holds (numbers; strings are no samples), as the doc's count.
        window: Any = SimpleNamespace(
            series={p.name: 0 for p in profile.points if p.type != "string"}
        )
        names.update(point_feature_names(window, profile))
    manifests = sorted((ROOT / "models" / "artifacts").glob(f"*/{MANIFEST_FILE}"))
    assert manifests
    for path in manifests:
        names.update(json.loads(path.read_text())["feature_names"])
    body = {
        "group": "fast",
        "start": 1.7e9,
        "end": 1.7e9 + 60,
        "n_samples": 60,
        "n_missing": 0,
        "features": dict.fromkeys(sorted(names), 1.0),
    }
    record = Record(1, 1.7e9 + 60, RecordKind.FEATURES, "d1", body)
    gateway = GatewayInfo("g", "c", "s", {"d1": DeviceRef("dev-1", "compressor")})
    point = to_point(record, gateway, now=1.7e9 + 60, max_future_s=300)
    assert point.measurement == "features"
    return {*point.tags, *point.fields, "time"}


def test_the_influxdb_column_limit_the_deploy_files_set_holds_the_features_table() -> None:
    columns = len(_features_table_columns())
    assert int(from_scale_out(r"= \*\*(\d+) columns\*\*")) == columns, "docs/scale-out.md"
    assert f"`time`: {columns} columns" in DEPLOY_README.read_text(), "deploy/README.md"
    assert f"gets {columns} columns" in (K8S / "config.yaml").read_text(), "config.yaml"
    limits = {
        (path.name, option): {int(v) for v in re.findall(rf"{option}[ =](\d+)", text)}
        for path in (K8S / "config.yaml", DEPLOY_README, SCALE_OUT)
        for text in [path.read_text()]
        for option in ("--num-total-columns-per-table-limit", "--max-columns")
    }
    assert all(len(v) == 1 for v in limits.values()), limits
    (limit,) = set.union(*limits.values())
    assert limit >= columns
    env = f"INFLUXDB3_NUM_TOTAL_COLUMNS_PER_TABLE_LIMIT={limit}"
    assert env in DEPLOY_README.read_text() and env in (K8S / "config.yaml").read_text()


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
