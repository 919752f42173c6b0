"""Agent configuration: environment variables (set by the Helm chart) with sane defaults."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from disklet.api.disklayout import DEFAULT_MOUNT_ROOTS
from disklet.lvm.thinpool import DEFAULT_DATA_THRESHOLD, DEFAULT_METADATA_THRESHOLD, Thresholds
from disklet.nsenter_target import DEFAULT_NSENTER_TARGET, NSENTER_TARGET_HELP, check_nsenter_target

DEFAULT_FILE_DEVICES_DIR = "/var/lib/disklet/file-devices"
DEFAULT_SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/nix", "/nix/store")
DEFAULT_VOLUME_MOUNTS = ("/var/lib/kcore/volumes*", "/var/lib/kcore/images")


def _env_list(name: str, default: tuple[str, ...]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [x.strip() for x in raw.split(",") if x.strip()]


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


class AgentConfig(BaseModel):
    node_name: str = Field(default="", description="Kubernetes node this agent serves (NODE_NAME).")
    use_nsenter: bool = Field(default=False, description="Run host commands in the host's namespaces (nsenter).")
    nsenter_target: str = Field(default=DEFAULT_NSENTER_TARGET, description="The host process whose namespaces "
                                "host commands enter (DISKLET_NSENTER_TARGET): " + NSENTER_TARGET_HELP + ".")
    host_root: Path = Field(default=Path("/"), description="Root under which /etc/disklet is read (tests use a sandbox).")
    file_devices_dir: str = Field(default=DEFAULT_FILE_DEVICES_DIR, description="Base directory of backing files.")
    free_space_reserve_percent: float = Field(default=15.0, ge=0, lt=100)
    system_mounts: list[str] = Field(default_factory=lambda: list(DEFAULT_SYSTEM_MOUNTS))
    volume_mounts: list[str] = Field(default_factory=lambda: list(DEFAULT_VOLUME_MOUNTS))
    refused_retry_seconds: float = Field(default=30.0, gt=0)
    scan_interval_seconds: float = Field(default=30.0, gt=0)
    resync_interval_seconds: float = Field(
        default=600.0, ge=0, description="Seconds between the safety-net relists of the node's LVMVolumeGroups "
        "and BlockDevices (from the API server's watch cache); 0: never (Kopf still relists after a watch error). "
        "docs/agent.md, \"API requests at idle\".")
    lvm_extra_config: str = Field(default="", description="Extra LVM --config text, e.g. global{activation=0} in tests.")
    disko_command: list[str] = Field(default_factory=lambda: ["disko"])
    nixos_rebuild_command: list[str] = Field(default_factory=lambda: ["nixos-rebuild"])
    systemd_run_command: list[str] = Field(default_factory=lambda: ["systemd-run"])
    command_timeout_seconds: float = Field(default=60.0, gt=0)
    lvm_shell: bool = Field(default=True, description="Run LVM commands in one persistent lvm shell (docs/agent.md).")
    thin_pool_data_threshold_percent: float = Field(default=DEFAULT_DATA_THRESHOLD, gt=0, le=100,
                                                    description="ThinPoolNearlyFull at or above this data %.")
    thin_pool_metadata_threshold_percent: float = Field(default=DEFAULT_METADATA_THRESHOLD, gt=0, le=100,
                                                        description="ThinPoolMetadataNearlyFull at or above this metadata %.")

    def thin_pool_thresholds(self) -> Thresholds:
        return Thresholds(self.thin_pool_data_threshold_percent, self.thin_pool_metadata_threshold_percent)
    mount_roots: list[str] = Field(default_factory=lambda: list(DEFAULT_MOUNT_ROOTS),
                                   description="Roots DiskLayout mountpoints must lie under (DISKLET_MOUNT_ROOTS).")
    allow_loop_targets: bool = Field(
        default=False, description="Let DiskLayouts target loop devices (tests and demos only; "
        "DISKLET_ALLOW_LOOP_TARGETS). Every other non-disk type stays refused.")

    @field_validator("nsenter_target")
    @classmethod
    def _target(cls, v: str) -> str:
        return check_nsenter_target(v)

    @field_validator("file_devices_dir")
    @classmethod
    def _base_dir(cls, v: str) -> str:
        v = os.path.normpath(v)
        if not v.startswith("/") or v == "/":
            raise ValueError("the file devices base directory must be absolute and never /")
        return v

    @property
    def etc_dir(self) -> Path:
        return self.host_root / "etc" / "disklet"

    @classmethod
    def from_env(cls) -> AgentConfig:
        e = os.environ
        return cls(
            node_name=e.get("NODE_NAME", ""),
            use_nsenter=_env_bool("DISKLET_NSENTER", False),
            nsenter_target=e.get("DISKLET_NSENTER_TARGET") or DEFAULT_NSENTER_TARGET,
            host_root=Path(e.get("DISKLET_HOST_ROOT", "/")),
            file_devices_dir=e.get("FILE_DEVICES_DIRECTORY", DEFAULT_FILE_DEVICES_DIR),
            free_space_reserve_percent=float(e.get("DISKLET_FREE_SPACE_RESERVE_PERCENT", "15")),
            system_mounts=_env_list("DISKLET_SYSTEM_MOUNTS", DEFAULT_SYSTEM_MOUNTS),
            volume_mounts=_env_list("DISKLET_VOLUME_MOUNTS", DEFAULT_VOLUME_MOUNTS),
            refused_retry_seconds=float(e.get("DISKLET_REFUSED_RETRY_SECONDS", "30")),
            scan_interval_seconds=float(e.get("DISKLET_SCAN_INTERVAL_SECONDS", "30")),
            resync_interval_seconds=float(e.get("DISKLET_RESYNC_INTERVAL_SECONDS", "600")),
            lvm_extra_config=e.get("DISKLET_LVM_EXTRA_CONFIG", ""),
            disko_command=(e.get("DISKLET_DISKO_COMMAND") or "disko").split(),
            nixos_rebuild_command=(e.get("DISKLET_NIXOS_REBUILD_COMMAND") or "nixos-rebuild").split(),
            systemd_run_command=(e.get("DISKLET_SYSTEMD_RUN_COMMAND") or "systemd-run").split(),
            command_timeout_seconds=float(e.get("DISKLET_COMMAND_TIMEOUT_SECONDS", "60")),
            lvm_shell=_env_bool("DISKLET_LVM_SHELL", True),
            thin_pool_data_threshold_percent=float(e.get("DISKLET_THIN_POOL_DATA_THRESHOLD_PERCENT",
                                                         str(DEFAULT_DATA_THRESHOLD))),
            thin_pool_metadata_threshold_percent=float(e.get("DISKLET_THIN_POOL_METADATA_THRESHOLD_PERCENT",
                                                             str(DEFAULT_METADATA_THRESHOLD))),
            mount_roots=_env_list("DISKLET_MOUNT_ROOTS", DEFAULT_MOUNT_ROOTS) or list(DEFAULT_MOUNT_ROOTS),
            allow_loop_targets=_env_bool("DISKLET_ALLOW_LOOP_TARGETS", False),
        )
