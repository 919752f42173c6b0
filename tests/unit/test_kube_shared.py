"""disklet.kube: errors by status, REST paths, kubeconfig credentials (exec plugin, context
choice), the merge-patch helpers and the Lease contract."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
import yaml

from disklet.api.resources import LVM_VOLUME_GROUP
from disklet.kube import lease, login
from disklet.kube.client import (
    LEASES,
    PODS,
    ApiError,
    ClientError,
    Conflict,
    Kind,
    NotFound,
    is_conflict,
    is_not_found,
)
from disklet.kube.patch import merge_patch, owned_keys_patch

pytestmark = pytest.mark.unit


def test_errors_are_classified_by_status_and_keep_the_servers_words() -> None:
    body = json.dumps({"kind": "Status", "message": 'lvmvolumegroups "x" not found', "reason": "NotFound"})
    err = ApiError.from_response("get LVMVolumeGroup/x", 404, "Not Found", body)
    assert isinstance(err, NotFound) and isinstance(err, ClientError) and is_not_found(err)
    assert err.message == 'lvmvolumegroups "x" not found' and err.reason == "NotFound"
    assert str(err) == 'get LVMVolumeGroup/x: lvmvolumegroups "x" not found (HTTP 404 NotFound)'
    assert isinstance(ApiError.from_response("create", 409, "Conflict", "{}"), Conflict)
    assert is_conflict(ApiError.from_response("create", 409, "Conflict", "{}"))
    assert type(ApiError.from_response("patch", 422, "Unprocessable", "not json")) is ClientError
    server = ApiError.from_response("list", 503, "Service Unavailable", "")
    assert type(server) is ApiError and server.message == "Service Unavailable"


def test_paths() -> None:
    lvg = Kind.of(LVM_VOLUME_GROUP)
    assert lvg.path() == "/apis/disklet.io/v1alpha1/lvmvolumegroups"
    assert lvg.path("a b", subresource="status") == "/apis/disklet.io/v1alpha1/lvmvolumegroups/a%20b/status"
    assert PODS.path("p", "ns", "exec") == "/api/v1/namespaces/ns/pods/p/exec"
    assert LEASES.path("disklet-agent-n1", "disklet-system") == \
        "/apis/coordination.k8s.io/v1/namespaces/disklet-system/leases/disklet-agent-n1"
    assert (lvg.api_version, PODS.api_version) == ("disklet.io/v1alpha1", "v1")


def _kubeconfig(path: Path, users: dict[str, dict[str, object]]) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "plain",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
        "contexts": [{"name": name, "context": {"cluster": "k", "user": name}} for name in users],
        "users": [{"name": name, "user": user} for name, user in users.items()]}))


def test_kubeconfig_runs_exec_plugins_and_honours_the_context(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text(f"#!{sys.executable}\nimport json, os\n"
                      "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
                      " 'kind': 'ExecCredential', 'status': {'token': 'from-' + os.environ['WHO']}}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    cfg = tmp_path / "config"
    _kubeconfig(cfg, {"plain": {"token": "t0ken"},
                      "sso": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin),
                                       "env": [{"name": "WHO", "value": "plugin"}]}}})
    assert login.kubeconfig(str(cfg)).headers == {"Authorization": "Bearer t0ken"}
    endpoint = login.kubeconfig(str(cfg), "sso")
    assert (endpoint.server, endpoint.headers) == ("http://127.0.0.1:1", {"Authorization": "Bearer from-plugin"})
    with pytest.raises(ApiError, match="cannot load kubeconfig"):
        login.kubeconfig(str(cfg), "no-such-context")


def test_merge_patch_and_owned_keys_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}, "e": [1]}) == {"a": None, "b": {"d": None},
                                                                                     "e": [1]}
    assert merge_patch({"a": {"b": 1}}, {"a": {"b": 1}}) == {}
    old = {"phase": "Ready", "mine": 1, "theirs": 2, "gone": 3}
    assert owned_keys_patch(old, {"phase": "Ready", "mine": 5}, {"phase", "mine", "gone"}) == {"gone": None, "mine": 5}
    assert owned_keys_patch(None, {"phase": "Ready"}) == {"phase": "Ready"}


def test_lease_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lease.lease_node(lease.lease_name("node-1")) == "node-1"
    assert lease.lease_node("kube-scheduler") is None and lease.lease_node(lease.LEASE_PREFIX) is None
    monkeypatch.delenv(lease.NAMESPACE_ENV, raising=False)
    assert lease.lease_namespace() == "disklet-system"
    monkeypatch.setenv(lease.NAMESPACE_ENV, "ops")
    assert lease.lease_namespace() == "ops"
    body = lease.lease_object("node-1", "ops")
    assert body["metadata"]["name"] == "disklet-agent-node-1" and body["spec"]["holderIdentity"] == "node-1"
