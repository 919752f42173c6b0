# Test support (never shipped): evaluate a disko config file exactly as disko's cli.nix does
# (import the file, call it with { lib, ... } if it is a function, take its disko.devices and put
# it through disko's own module types), and return the script disko runs for --mode format,mount
# plus a summary of what the script would touch, which the test disko checks before running it.
{ evalDir, layoutFile, rootMountPoint }:
let
  lib = import (evalDir + "/nixpkgs-lib/lib");
  diskoLib = import (evalDir + "/disko/lib") {
    inherit lib rootMountPoint;
    makeTest = null;
    eval-config = null;
    qemu-common = null;
  };
  raw = import (/. + layoutFile);
  cfg = if builtins.isFunction raw then raw { inherit lib rootMountPoint; } else raw;
  evaled = lib.evalModules {
    modules = [{
      imports = [ { disko.devices = cfg.disko.devices; } ];
      options.disko.devices = lib.mkOption { type = diskoLib.toplevel; };
    }];
  };
  devices = evaled.config.disko.devices;
  hookNames = [ "preCreateHook" "postCreateHook" "preMountHook" "postMountHook" "preUnmountHook" "postUnmountHook" ];
  hooks = x: lib.concatStrings (map (h: x.${h} or "") hookNames);
  content = c: if c == null then null else {
    type = c.type;
    device = c.device or null;
    mountpoint = c.mountpoint or null;
    format = c.format or null;
    hooks = hooks c;
    lvs = if c.type == "lvm_vg" then lib.attrNames c.lvs else [ ];
    partitions = if c.type == "gpt" then lib.mapAttrsToList (name: p: {
      inherit name;
      device = p.device;
      label = p.label;
      hooks = hooks p;
      content = content p.content;
    }) c.partitions else [ ];
  };
in {
  formatMount = devices._formatMount;
  create = devices._create;
  mount = devices._mount;
  summary = {
    kinds = lib.filter (k: devices.${k} != { }) [ "bcachefs_filesystems" "disk" "mdadm" "zpool" "lvm_vg" "nodev" ];
    disks = lib.mapAttrsToList (name: d: {
      inherit name;
      device = d.device;
      hooks = hooks d;
      content = content d.content;
    }) devices.disk;
    vgs = lib.mapAttrsToList (name: v: {
      inherit name;
      hooks = hooks v;
      lvs = lib.mapAttrsToList (lvName: l: { name = lvName; hooks = hooks l; content = content l.content; }) v.lvs;
    }) devices.lvm_vg;
    pools = lib.mapAttrsToList (name: p: { inherit name; topology = builtins.isAttrs p.mode; hooks = hooks p; })
      devices.zpool;
  };
}
