"""Host-side LVM engine for LVMVolumeGroups (issue 8): adapters, pure planners, the engine."""

from .engine import DeleteOutcome, LvgOutcome, LVMEngine
from .snapshot import LvmSnapshot

__all__ = ["DeleteOutcome", "LVMEngine", "LvmSnapshot", "LvgOutcome"]
