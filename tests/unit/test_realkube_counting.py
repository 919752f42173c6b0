"""How devkit.realkube attributes requests to apiserver_request_total's labels (the API tier's
request counts on the real server rest on it)."""

from __future__ import annotations

import pytest

from devkit.realkube import metric_labels, split_labels


@pytest.mark.parametrize(("method", "url", "labels"), [
    ("GET", "/apis/disklet.io/v1alpha1/lvmvolumegroups", ("LIST", "lvmvolumegroups", "")),
    ("GET", "/apis/disklet.io/v1alpha1/lvmvolumegroups?watch=true&labelSelector=a%3Db", ("WATCH", "lvmvolumegroups", "")),
    ("GET", "/apis/disklet.io/v1alpha1/lvmvolumegroups/x", ("GET", "lvmvolumegroups", "")),
    ("PATCH", "/apis/disklet.io/v1alpha1/lvmvolumegroups/x/status", ("PATCH", "lvmvolumegroups", "status")),
    ("POST", "/api/v1/namespaces", ("POST", "namespaces", "")),
    ("GET", "/api/v1/namespaces/ns", ("GET", "namespaces", "")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", ("PUT", "leases", "")),
    ("GET", "/api/v1/namespaces/ns/pods", ("LIST", "pods", "")),
    ("DELETE", "/api/v1/nodes/n1", ("DELETE", "nodes", "")),
])
def test_metric_labels_of_resource_requests(method: str, url: str, labels: tuple[str, str, str]) -> None:
    assert metric_labels(method, url) == labels


def test_non_resource_paths_have_no_labels() -> None:
    assert metric_labels("GET", "/metrics") is None
    assert metric_labels("GET", "/apis/disklet.io/v1alpha1") is None


def test_label_values_may_hold_commas() -> None:
    assert split_labels('code="200",component="apiserver",resource="x",verb="LIST",dry_run="a,b"') == [
        "code=200", "component=apiserver", "resource=x", "verb=LIST", "dry_run=a,b"]
