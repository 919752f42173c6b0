"""The agent DaemonSet's privileges and the node-authority policy, as rendered by the chart.

What the policy does on a real API server is proved in tests/api/test_node_authority_real.py.
"""

from __future__ import annotations

import pytest

from disklet.hostcmd import NSENTER_PREFIX
from tests.unit.test_chart_support import CHART, NAMESPACE, by_kind, one, render, template

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


@pytest.fixture(scope="module")
def default_docs():
    return render()


def agent_pod(docs):
    return one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]


def test_agent_enters_only_the_host_namespaces_it_needs(default_docs):
    pod = agent_pod(default_docs)
    assert pod["hostPID"] is True  # nsenter -t 1 must reach the host's init
    assert pod["hostNetwork"] is False and pod["hostIPC"] is False
    assert NSENTER_PREFIX == ("nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--")
    text = (CHART / "templates" / "agent-daemonset.yaml").read_text()
    for flag, why in (("-m mount", "binaries"), ("-u UTS", "host name"), ("-i IPC", "udev"), ("-n net", "resolver")):
        assert flag in text and why in text, f"the chart must say why the agent enters {flag}"


def test_seccomp_runtime_default_on_both_pods(default_docs):
    assert agent_pod(default_docs)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    op = one(default_docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert op["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def _required_terms(pod):
    return pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]


NOT_CP = {"key": CONTROL_PLANE, "operator": "DoesNotExist"}


def test_control_plane_nodes_are_opt_in(default_docs):
    pod = agent_pod(default_docs)
    assert "tolerations" not in pod
    assert _required_terms(pod) == [{"matchExpressions": [NOT_CP]}]
    opted = agent_pod(render("agent.controlPlaneNodes=true"))
    assert "affinity" not in opted
    assert opted["tolerations"] == [{"key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule"}]


def test_control_plane_exclusion_is_added_to_every_user_affinity_term():
    user = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disklet.io/storage", "operator": "In", "values": ["true"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
    ]}}, "podAntiAffinity": {}}
    pod = agent_pod(render(values={"agent": {"affinity": user,
                                             "tolerations": [{"key": "storage", "operator": "Exists"}]}}))
    terms = _required_terms(pod)
    assert len(terms) == 2 and all(NOT_CP in t["matchExpressions"] for t in terms)
    assert terms[0]["matchExpressions"][0]["key"] == "disklet.io/storage"
    assert terms[1]["matchFields"][0]["values"] == ["n1"]
    assert pod["tolerations"] == [{"key": "storage", "operator": "Exists"}]


def test_node_authority_policy_is_keyed_on_the_node_claim_of_the_agent(default_docs):
    policy = one(default_docs, "ValidatingAdmissionPolicy", "-agent-node-authority")
    binding = one(default_docs, "ValidatingAdmissionPolicyBinding", "-agent-node-authority")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (cond,) = spec["matchConditions"]
    account = one(default_docs, "ServiceAccount", "-agent")["metadata"]["name"]
    assert cond["expression"] == f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{account}"'
    assert "authentication.kubernetes.io/node-name" in spec["variables"][0]["expression"]
    rules = {r: rule["operations"] for rule in spec["matchConstraints"]["resourceRules"] for r in rule["resources"]}
    for r in ("disklayouts", "disklayouts/status", "lvmvolumegroups", "lvmvolumegroups/status",
              "blockdevices", "blockdevices/status", "leases"):
        assert rules[r] == ["CREATE", "UPDATE", "DELETE"], r
    assert all(v.get("message") or v.get("messageExpression") for v in spec["validations"])


def test_node_authority_can_be_switched_off_explicitly():
    docs = render("agent.nodeAuthority.enabled=false")
    assert not by_kind(docs, "ValidatingAdmissionPolicy") and not by_kind(docs, "ValidatingAdmissionPolicyBinding")
    proc = template("agent.nodeAuthority=yes", check=False)
    assert proc.returncode != 0


def test_nsenter_target_and_host_network_are_values_defaulting_to_pid_1_and_pod_network(default_docs):
    env = {e["name"]: e.get("value") for e in agent_pod(default_docs)["containers"][0]["env"]}
    assert env["DISKLET_NSENTER"] == "true" and env["DISKLET_NSENTER_TARGET"] == "1"
    op = one(default_docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert not op.get("hostNetwork") and "dnsPolicy" not in op
    docs = render("agent.nsenterTarget=name:kubelet", "agent.hostNetwork=true", "operator.hostNetwork=true")
    pod = agent_pod(docs)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DISKLET_NSENTER_TARGET"] == "name:kubelet"
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    op = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert op["hostNetwork"] is True and op["dnsPolicy"] == "ClusterFirstWithHostNet"


@pytest.mark.parametrize("bad", ["0", "-1", "name:", "name:a/b", "name:sixteen-chars-xx", "kubelet", "1 2"])
def test_schema_refuses_a_malformed_nsenter_target(bad):
    res = template(check=False, values={"agent": {"nsenterTarget": bad}})
    assert res.returncode != 0 and "nsenterTarget" in res.stderr, (bad, res.stderr[-500:])
