"""deploy/kubernetes: every rendered manifest validated against the Kubernetes schemas of
two recent versions (kubernetes-validate, strict: unknown fields fail), and the
guarantees docs/kubernetes.md claims read back from the rendered objects.

No API server runs here (none can be installed on these machines): this checks the
objects, not a cluster. kustomize is kubectl's (``kubectl kustomize``): Debian's
kubernetes-client in CI, kustomize v2; newer ones render the same objects.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent_side.__main__ import parse_args
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/gvisor")
VERSIONS = ("1.36.0", "1.37.0")
"""Two recent Kubernetes versions whose schemas kubernetes-validate ships."""


def render(name: str) -> list[dict[str, Any]]:
    done = subprocess.run([require_binary("kubectl"), "kustomize", str(ROOT / name)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert docs, f"{name} rendered nothing"
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only, as ours are) matching *labels*."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid(name: str, version: str) -> None:
    docs = render(name)
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{name}: {doc['kind']}/{doc['metadata']['name']} is not "
                                 f"valid for Kubernetes {version}: {e}") from e
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "Role", "RoleBinding",
                                        "Deployment", "Service", "PodTemplate", "NetworkPolicy"}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_validator_refuses_a_broken_object(version: str) -> None:
    deployment = copy.deepcopy(by_kind(render("base"), "Deployment")["visual-runtime-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)
    deployment = copy.deepcopy(by_kind(render("base"), "Deployment")["visual-runtime-gateway"])
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_the_session_pod_keeps_the_docker_backends_promises(tmp_path: Path) -> None:
    docs = render("base")
    templates = by_kind(docs, "PodTemplate")
    assert set(templates) == {"visual-runtime-session-none", "visual-runtime-session-egress"}
    for network, template in ((n.rsplit("-", 1)[1], t) for n, t in templates.items()):
        meta, spec = template["template"]["metadata"], template["template"]["spec"]
        assert meta["labels"]["visual-runtime/network"] == network
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        assert not spec["hostNetwork"] and not spec["hostIPC"] and not spec["hostPID"]
        assert spec["shareProcessNamespace"] is False
        containers = {c["name"]: c for c in spec["containers"]}
        assert set(containers) == {"app", "agent"}
        for name, uid in (("app", 10001), ("agent", 10002)):
            ctx = containers[name]["securityContext"]
            assert ctx["runAsUser"] == uid and ctx["runAsNonRoot"] is True
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"]
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert containers[name]["resources"]["limits"]["memory"]
        assert containers["app"]["securityContext"]["seccompProfile"] == {
            "type": "Localhost", "localhostProfile": "visual-runtime/seccomp-chromium.json"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {name: {m["name"] for m in c["volumeMounts"]} for name, c in containers.items()}
        assert "x11" in mounts["app"] and "x11" in mounts["agent"]
        assert volumes["x11"]["emptyDir"]["medium"] == "Memory"
        assert "link" in mounts["agent"] and "link" not in mounts["app"]
        assert volumes["link"]["secret"]["defaultMode"] == 0o440
        # The agent's command line is one the real runtime agent accepts.
        secret, bundle = tmp_path / "secret", tmp_path / "bundle.pem"
        secret.write_text("s" * 43)
        bundle.write_text("")
        args = [a.replace("/run/secrets/vr-link/secret", str(secret))
                 .replace("/run/secrets/vr-link/bundle.pem", str(bundle))
                for a in containers["agent"]["args"]]
        assert args[0] == "agent"
        config = parse_args(args[1:])
        assert config.listen is not None and config.listen.port == 17100
        assert containers["agent"]["ports"][0]["containerPort"] == config.listen.port


def test_network_policies_match_the_pods_they_are_for() -> None:
    docs = render("base")
    templates = {n.rsplit("-", 1)[1]: t["template"]["metadata"]["labels"]
                 for n, t in by_kind(docs, "PodTemplate").items()}
    gateway = by_kind(docs, "Deployment")["visual-runtime-gateway"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    policies = by_kind(docs, "NetworkPolicy")

    deny = policies["session-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for labels in templates.values():
        assert selects(deny["podSelector"], labels)

    link = policies["session-link-and-media"]["spec"]
    assert all(selects(link["podSelector"], labels) for labels in templates.values())
    sources = [rule["from"][0]["podSelector"] for rule in link["ingress"]]
    assert selects(sources[0], gateway_labels)
    assert link["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 17100}]
    assert not selects(sources[0], templates["none"]), "sessions must not reach each other"

    internet = policies["session-egress-internet"]["spec"]
    assert selects(internet["podSelector"], templates["egress"])
    assert not selects(internet["podSelector"], templates["none"])
    blocked = internet["egress"][0]["to"][0]["ipBlock"]["except"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(blocked)


def test_the_gateway_may_only_manage_sessions_in_its_namespace() -> None:
    docs = render("base")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = by_kind(docs, "Role")["visual-runtime-gateway"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    secrets = next(r for r in role["rules"] if r["resources"] == ["secrets"])
    assert "list" not in secrets["verbs"] and "watch" not in secrets["verbs"]
    binding = by_kind(docs, "RoleBinding")["visual-runtime-gateway"]
    account = by_kind(docs, "ServiceAccount")["visual-runtime-gateway"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    deployment = by_kind(docs, "Deployment")["visual-runtime-gateway"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "visual-runtime-gateway"
    assert all(d["metadata"].get("namespace", "visual-runtime") == "visual-runtime"
               for d in docs if d["kind"] != "Namespace")


def test_the_gvisor_overlay_runs_every_session_under_runsc() -> None:
    docs = render("overlays/gvisor")
    assert by_kind(docs, "RuntimeClass")["gvisor"]["handler"] == "runsc"
    for template in by_kind(docs, "PodTemplate").values():
        assert template["template"]["spec"]["runtimeClassName"] == "gvisor"
    base = render("base")
    assert all("runtimeClassName" not in t["template"]["spec"]
               for t in by_kind(base, "PodTemplate").values())
