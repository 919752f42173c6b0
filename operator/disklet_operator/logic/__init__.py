"""Pure decision logic of the operator (no Kopf, no API): unit tested in tests/unit/test_operator_*.py.

- ``generation``: the layoutGeneration rule (bump only when the layout hash changes).
- ``duplicates``: one DiskLayout per node (the oldest wins).
- ``disklayout_status``: from a pre-flight verdict and the current status to the new status.
- ``readiness``: NodeReady, AgentReady and the aggregate Ready of an LVMVolumeGroup, and the
  conditions update the operator writes.
- ``labels``: the ``disklet.io/node`` label every object must carry.
- ``lvgset_plan``: the LVMVolumeGroupSet fan-out plan (which child, which write, the rollout gate);
- ``lvgset_status``: the set's status after the writes (counts, attention, conditions, the patch).

Merge patches are computed by :mod:`disklet.kube.patch` (one helper for the whole project).
"""
