"""A new user's chart mistakes get an answer that says what to write instead, and alerts that can
never fire are not rendered (tests/unit/test_chart.py style: helm template / install --dry-run)."""

from __future__ import annotations

from test_chart_support import CHART, NAMESPACE, RELEASE, by_kind, render, run_helm, template

ROOT = CHART.parents[1]


def alerts(*sets: str) -> dict[str, dict]:
    (rule,) = by_kind(render("metrics.prometheusRule.enabled=true", *sets), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_kube_state_metrics_alerts_only_when_their_metrics_exist():
    default = alerts()
    # The CustomResourceState config is off by default: its kube_disklet_* series never exist.
    assert "DiskletLVMVolumeGroupNotReady" not in default and "DiskletDiskLayoutRefusedOrFailed" not in default
    assert "DiskletAgentMissing" in default  # kube-state-metrics' own kube_daemonset_* (assumed present)
    with_config = alerts("kubeStateMetrics.customResourceState.enabled=true")
    assert {"DiskletLVMVolumeGroupNotReady", "DiskletDiskLayoutRefusedOrFailed", "DiskletAgentMissing"} <= set(with_config)
    without_ksm = alerts("metrics.prometheusRule.kubeStateMetrics=false",
                         "kubeStateMetrics.customResourceState.enabled=true")
    assert not {a for a, r in without_ksm.items() if "kube_" in r["expr"]}, without_ksm
    assert set(without_ksm) == {"DiskletThinPoolDataNearlyFull", "DiskletThinPoolMetadataNearlyFull",
                                "DiskletVolumeGroupNearlyFull"}


def test_every_alert_has_a_runbook_url_with_an_existing_section():
    from test_doc_references import anchors

    every = alerts("kubeStateMetrics.customResourceState.enabled=true")
    runbooks = ROOT / "docs" / "runbooks.md"
    sections = anchors(runbooks)
    for name, rule in every.items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://") and "/docs/runbooks.md#" in url, url
        assert url.split("#", 1)[1] in sections, (name, url)
    custom = alerts("metrics.prometheusRule.runbookBaseURL=https://wiki.example/disklet")
    assert custom["DiskletAgentMissing"]["annotations"]["runbook_url"] == "https://wiki.example/disklet#diskletagentmissing"


def test_top_level_image_pull_secrets_points_to_image_pull_secrets():
    proc = template(values={"imagePullSecrets": [{"name": "regcred"}]}, check=False)
    assert proc.returncode != 0
    assert "image.pullSecrets" in proc.stderr and "imagePullSecrets" in proc.stderr, proc.stderr
    docs = render(values={"image": {"registry": "ghcr.io/disklet", "pullSecrets": [{"name": "regcred"}]}})
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert ds["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_image_tag_latest_says_why_and_what_to_write():
    proc = template("image.tag=latest", check=False)
    assert proc.returncode != 0
    assert "'not' failed" not in proc.stderr, proc.stderr
    assert "image.tag=latest" in proc.stderr and "version" in proc.stderr, proc.stderr


def notes(*sets: str) -> str:
    args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[proc.stdout.index("NOTES:"):]


def test_loop_target_test_switch_in_extra_env_is_warned_about():
    assert "WARNING" not in notes()
    text = notes("agent.extraEnv[0].name=DISKLET_ALLOW_LOOP_TARGETS", "agent.extraEnv[0].value=1")
    assert "WARNING" in text and "DISKLET_ALLOW_LOOP_TARGETS" in text and "loop devices" in text, text
    assert "WARNING" not in notes("agent.extraEnv[0].name=DISKLET_ALLOW_LOOP_TARGETS", "agent.extraEnv[0].value=0")


def test_notes_point_to_describe_for_events():
    text = notes()
    assert "get events   # events of disklet objects land here" not in text
    assert "kubectl describe" in text
