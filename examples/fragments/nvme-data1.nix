# disko body for one NVMe data disk (used by examples/disklayout-nix-file.yaml).
# Plain attribute set, literal values only: it also pre-flights offline (kctl diff without nix).
{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T000000X";
    content = {
      type = "gpt";
      partitions.kcore0 = {
        priority = 100;
        size = "100%";
        content = {
          type = "filesystem";
          format = "xfs";
          mountpoint = "/var/lib/kcore/volumes1";
          mountOptions = [ "nofail" ];
        };
      };
    };
  };
}
