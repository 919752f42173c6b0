"""The node's disk management mode: the human's "yes, this node may be re-partitioned" switch.

``<etc_dir>/disk-management-mode`` (fallback: the legacy ``disko-management-mode``) holds
``installer-only`` (the default: validation only) or ``controller-managed`` (DiskLayouts and
``disklet-agent apply-disk --apply`` may format). Missing or unreadable → ``installer-only``. Any
other value is reported as an error and also treated as ``installer-only``: a typo never arms a
node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Mode = Literal["installer-only", "controller-managed"]

INSTALLER_ONLY: Final[Mode] = "installer-only"
CONTROLLER_MANAGED: Final[Mode] = "controller-managed"
MODES = (INSTALLER_ONLY, CONTROLLER_MANAGED)
MODE_FILE = "disk-management-mode"
LEGACY_MODE_FILE = "disko-management-mode"


def promote_command(etc_dir: Path | str = "/etc/disklet") -> str:
    return f"echo {CONTROLLER_MANAGED} | sudo tee {Path(etc_dir) / MODE_FILE}"


@dataclass(frozen=True)
class ModeReading:
    mode: Mode
    source: Path | None
    """The file the mode was read from (None: no file, default applies)."""
    error: str | None = None
    """Set when a file exists but could not be used (unreadable or an unknown value)."""

    @property
    def controller_managed(self) -> bool:
        return self.mode == CONTROLLER_MANAGED

    def explain(self, etc_dir: Path | str = "/etc/disklet") -> str:
        """One sentence naming the active mode, where it came from, and how to promote."""
        where = f"from {self.source}" if self.source else f"default: {Path(etc_dir) / MODE_FILE} does not exist"
        text = f"disk management mode is {self.mode} ({where})"
        if self.error:
            text += f"; {self.error}"
        if not self.controller_managed:
            text += (f". Applying disk layouts needs {CONTROLLER_MANAGED}; when the runbook and maintenance "
                     f"window are in place, promote the node with: {promote_command(etc_dir)}")
        return text


def read_management_mode(etc_dir: Path) -> ModeReading:
    """Read the mode file (new name first, then the legacy one)."""
    for name in (MODE_FILE, LEGACY_MODE_FILE):
        path = Path(etc_dir) / name
        try:
            raw = path.read_text(encoding="utf-8", errors="strict")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return ModeReading(INSTALLER_ONLY, path, f"{path} cannot be read ({reason}); treated as {INSTALLER_ONLY}")
        value = raw.strip()
        if value == CONTROLLER_MANAGED:
            return ModeReading(CONTROLLER_MANAGED, path)
        if value == INSTALLER_ONLY:
            return ModeReading(INSTALLER_ONLY, path)
        shown = value if len(value) <= 64 else value[:64] + "..."
        return ModeReading(INSTALLER_ONLY, path,
                           f"{path} contains {shown!r}, which is not a mode (accepted: {', '.join(MODES)}); "
                           f"treated as {INSTALLER_ONLY}")
    return ModeReading(INSTALLER_ONLY, None)
