"""helm install on a real node: the chart's DaemonSet and Deployment become Ready, judged by the kubelet."""

from __future__ import annotations

from typing import Any

import yaml

from tests.node.release import Release, built_images, images_values


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_install_makes_daemonset_and_deployment_ready(release: Release) -> None:
    ds = release.get("daemonset", "-n", release.namespace, f"{release.name}-agent")
    dep = release.get("deployment", "-n", release.namespace, f"{release.name}-operator")
    assert ds and ds["status"].get("numberReady") == ds["status"].get("desiredNumberScheduled") == 1, ds and ds["status"]
    assert dep and dep["status"].get("readyReplicas") == 1, dep and dep["status"]
    for component in ("agent", "operator"):
        pod = release.pod(component)
        assert pod["spec"]["nodeName"] == release.node.name
        conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conds.get("Ready") == "True", (component, pod["status"])
        status = pod["status"]["containerStatuses"][0]
        # The kubelet ran the chart's probes against the real processes: started, ready, never restarted.
        assert status["ready"] and status["started"] and status["restartCount"] == 0, (component, status)
        assert "livenessProbe" in _container(pod), component
        # The image README's ctr lines loaded, as `make images`' values file names it: nothing pulled.
        assert _container(pod)["image"] == built_images()[component], (component, _container(pod)["image"])
        policy = yaml.safe_load(images_values().read_text())["image"]["pullPolicy"]
        assert _container(pod)["imagePullPolicy"] == policy, component
        env = {e["name"]: e.get("value") for e in _container(pod).get("env") or []}
        # The API server's loopback address comes from the chart's values (extraEnv), not from patching.
        assert env.get("KUBERNETES_SERVICE_HOST") == "127.0.0.1", env
        assert pod["spec"].get("hostNetwork") is True
    agent = release.pod("agent")
    assert "readinessProbe" in _container(agent)
    env = {e["name"]: e.get("value") for e in _container(agent).get("env") or []}
    assert env.get("DISKLET_NSENTER") == "true"
    assert env.get("DISKLET_NSENTER_TARGET") == str(release.node.pid("kubelet"))


def test_pods_log_in_through_the_service_host_not_cluster_dns(release: Release) -> None:
    """Both pods' Kopf watches reach the API server at KUBERNETES_SERVICE_HOST (no cluster DNS here):
    the agent's Lease is renewed and the operator answers its liveness probe with its watchers up."""
    for component in ("agent", "operator"):
        log = release.logs(component, tail=2000)
        assert "kubernetes.default.svc" not in log, f"{component} tried cluster DNS:\n{log[-3000:]}"
