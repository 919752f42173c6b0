"""Pure sizing of thin pools and file devices: the code lives in :mod:`disklet.lvm_sizing`, shared with
``kctl diff`` (the sizes kctl predicts are the sizes the agent computes)."""

from disklet.lvm_sizing import (
    ThinPoolAction,
    ThinPoolTarget,
    file_needs_growth,
    grow_threshold,
    loop_needs_refresh,
    plan_thin_pool,
    pv_needs_resize,
    thin_pool_target,
)

__all__ = ["ThinPoolAction", "ThinPoolTarget", "file_needs_growth", "grow_threshold", "loop_needs_refresh",
           "plan_thin_pool", "pv_needs_resize", "thin_pool_target"]
