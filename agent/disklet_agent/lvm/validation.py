"""Pure validation of an LVMVolumeGroup for this node: the code lives in :mod:`disklet.lvm_validation`,
shared with ``kctl diff`` (the checks kctl predicts are the checks the agent runs)."""

from disklet.lvm_validation import (
    CONTROL_CHARS,
    component_prefixes,
    escape_through_symlink,
    has_control_chars,
    inside_base,
    validate_directory,
    validate_lvg,
    validate_size,
)

__all__ = ["CONTROL_CHARS", "component_prefixes", "escape_through_symlink", "has_control_chars", "inside_base",
           "validate_directory", "validate_lvg", "validate_size"]
