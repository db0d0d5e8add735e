"""deploy/kubernetes: valid against the official schemas, and wired as the README tells users."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still supported upstream when this was written, and the newest known.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


def resources() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/kubernetes` sends, from the kustomization's files."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text(encoding="utf-8"))
                 if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    [found] = [r for r in resources() if r["kind"] == kind]
    return found


def readme_command(pattern: str) -> re.Match[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(pattern, text)
    assert found, f"the README does not say `{pattern}`"
    return found


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert {r["kind"] for r in resources()} == {"Deployment", "Service", "PodDisruptionBudget"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_two_replicas_probed_on_healthz_and_a_budget_that_keeps_one() -> None:
    deployment, service, budget = one("Deployment"), one("Service"), one("PodDisruptionBudget")
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selects = deployment["spec"]["selector"]["matchLabels"]
    assert selects.items() <= pod_labels.items()

    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in ports, f"{probe} names no port of the container"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["PORT"]) == ports["http"] and env["HOST"] == "0.0.0.0"

    # The budget and the Service pick exactly the Deployment's pods.
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == selects
    assert service["spec"]["selector"] == selects
    assert service["spec"]["ports"][0]["targetPort"] in ports


def test_secrets_and_the_runbook_come_from_what_the_readme_tells_users_to_create() -> None:
    secret_cmd = readme_command(r"kubectl create secret generic (\S+) --from-env-file=\.env"
                                r"((?:\s*\\?\s*--from-file=\S+)+)")
    secret_name = secret_cmd.group(1)
    secret_keys = set(re.findall(r"--from-file=([^=\s]+)=", secret_cmd.group(2)))
    # --from-env-file=.env: the variables .env.example lists, set or commented out.
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    secret_keys |= set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", env_example, re.M))
    runbook_map = readme_command(r"kubectl create configmap (\S+) --from-file=(\S+?)=").group(1)
    assert readme_command(r"kubectl apply -k deploy/kubernetes")

    pod = one("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]
                   for e in container["env"] if "valueFrom" in e}
    assert {"DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
            "ROLLBOT_WEBHOOK_SECRET"} <= from_secret.keys()
    for name, ref in from_secret.items():
        assert ref["name"] == secret_name, f"{name} comes from Secret {ref['name']}"
        assert ref["key"] in secret_keys, f"{name}: the README's Secret has no key {ref['key']}"
    # Socket Mode needs no signing secret, HTTP mode no app token; the rest every replica needs.
    optional = {n for n, ref in from_secret.items() if ref.get("optional")}
    assert optional == {"SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"}

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    ssh = volumes[mounts["/secrets"]["name"]]["secret"]
    assert ssh["secretName"] == secret_name
    assert {i["key"] for i in ssh["items"]} == {"id_ed25519", "known_hosts"} <= secret_keys
    # The key file is root's, readable by the pod's group: rollbot's user is in it (fsGroup).
    assert ssh["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    runbook = volumes[mounts["/etc/rollbot"]["name"]]["configMap"]
    assert runbook["name"] == runbook_map
    assert {i["path"] for i in runbook["items"]} == {"rollbot.toml"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROLLBOT_CONFIG"] == "/etc/rollbot/rollbot.toml"


def test_rollbot_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # Writable only where rollbot writes: scratch volumes, nothing from the image.
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert {m["mountPath"] for m in writable} == {"/tmp", "/var/lib/rollbot"}
    assert all("emptyDir" in volumes[m["name"]] for m in writable)
