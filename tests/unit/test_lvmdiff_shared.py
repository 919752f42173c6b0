"""kctl diff predicts with the agent's own rules: the same function objects, not copies."""

from __future__ import annotations

from disklet_agent.lvm import sizing as agent_sizing
from disklet_agent.lvm import validation as agent_validation

from disklet import lvm_sizing, lvm_validation
from disklet.cli import lvmdiff


def test_kctl_diff_and_the_agent_share_validation_and_sizing():
    assert lvmdiff.validate_lvg is agent_validation.validate_lvg is lvm_validation.validate_lvg
    assert lvmdiff.plan_thin_pool is agent_sizing.plan_thin_pool is lvm_sizing.plan_thin_pool
