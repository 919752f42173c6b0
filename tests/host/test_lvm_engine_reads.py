"""How many host reads a reconcile costs, and that the safety reads stay live (docs/design/lvm.md rules 4, 5, 8)."""

from __future__ import annotations

from disklet.api.lvm import LVGPhase
from disklet.hostcmd import CommandResult
from tests.host.lvm_fixtures import LvmEnv, lvm_env_fixture  # noqa: F401 - fixture

LVM_CMDS = {"pvs", "vgs", "lvs", "pvcreate", "vgcreate", "vgextend", "vgchange", "pvremove", "vgremove", "lvcreate",
            "lvextend", "lvremove", "pvresize"}


def _record(env: LvmEnv) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []

    def observe(res: CommandResult) -> None:
        seen.append(tuple(res.argv))

    env.runner.observers.append(observe)
    return seen


def test_create_decides_pvcreate_from_a_pvs_read_after_the_last_attach(lvm_env: LvmEnv) -> None:
    env = lvm_env
    seen = _record(env)
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi"), ("b", "1Gi")]), None, generation=1)
    assert out.status.phase == LVGPhase.READY
    names = [a[0] for a in seen]
    last_attach = max(i for i, a in enumerate(seen) if a[:2] == ("losetup", "--find"))
    pvcreate = names.index("pvcreate")
    assert "pvs" in names[last_attach:pvcreate]  # rule 4: a live pvs between the attach and the pvcreate
    assert names.count("pvcreate") == 1 and names.count("vgcreate") == 1
    assert not [a for a in seen if a[1].startswith("--associated")]
    # start pvs and node-wide pvs (VG name free?) side by side, then after the attaches the live pvs and
    # the node-wide pvs side by side, pvcreate, vgcreate, final pvs: every read kept, two pairs overlapped
    assert sum(n in LVM_CMDS for n in names) == 7
    everything = 'devices { global_filter = [ "a|.*|" ]'  # the node-wide read's filter
    node_wide = [i for i, a in enumerate(seen) if a[0] == "pvs" and a[2].startswith(everything)]
    assert len(node_wide) == 2 and node_wide[0] < last_attach < node_wide[1] < pvcreate, names
    assert names.index("vgcreate") > pvcreate
    # The status derived from the post-vgcreate read equals what a fresh discovery reports.
    fresh = env.engine.discover([(env.lvg, env.spec([("a", "1Gi"), ("b", "1Gi")]))])[env.lvg]
    assert fresh is not None
    assert [n.to_wire() for n in out.status.nodes or []] == [n.to_wire() for n in fresh.nodes or []]
    assert (out.status.vg_uuid, out.status.vg_size, out.status.vg_free) == (fresh.vg_uuid, fresh.vg_size,
                                                                           fresh.vg_free)
    assert {p["pv_uuid"] for p in env.pvs()} == {fd.pv_uuid for fd in out.status.nodes[0].file_devices or []}


def test_idempotent_reconcile_reads_lvm_once(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    seen = _record(env)
    again = env.engine.reconcile(env.lvg, spec, first.status, generation=1)
    assert not again.changed and again.status.to_wire() == first.status.to_wire()
    names = [a[0] for a in seen]
    # one pvs (with VG columns; no LVs → no lvs) and, side by side with it, the node-wide pvs (VG names
    # only: has another VG taken this VG's name since?)
    assert [n for n in names if n in LVM_CMDS] == ["pvs", "pvs"]
    everything = 'devices { global_filter = [ "a|.*|" ]'
    assert len([a for a in seen if a[0] == "pvs" and a[2].startswith(everything)]) == 1, names
    assert len(seen) == 6, seen  # realpath, losetup --list, pvs, node-wide pvs, one stat per file
    assert len(env.our_loops()) == 2


def test_delete_lists_pvs_live_after_removing_the_vg(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    seen = _record(env)
    done = env.engine.delete(env.lvg, spec, first.status)
    assert done.done and env.our_loops() == [] and not env.file("a").exists()
    names = [a[0] for a in seen]
    first_detach = next(i for i, a in enumerate(seen) if a[1].startswith("--detach="))
    assert "pvs" in names[names.index("pvremove"):first_detach]  # rule 8: live pvs before detaching
