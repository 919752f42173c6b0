#!/bin/sh
# PID 1 of disklet's test VM (devkit/vm), run from the project image (/opt/disklet) by the root's
# stub. There is no init system: mount the kernel's file systems, start udev, load the disk drivers
# and device-mapper targets, mount the state disk, unpack the job from the job disk, run it, write
# /run/results to the results disk as a tar stream, power off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp
# what systemd would make: bash's process substitution (disko's scripts use it) needs /dev/fd
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /run/lvm /run/results /run/job
hostname disklet-vm
echo "== disklet-vm: init $(cut -d' ' -f1 /proc/uptime)s"
/lib/systemd/systemd-udevd --daemon >/dev/null 2>&1
# Load the disk drivers and the device-mapper targets the tests use ourselves (a full coldplug
# would load a module for every emulated device: minutes under software emulation), then let
# udev process the block devices only.
for m in nvme ahci virtio_scsi sd_mod dm_mod dm_thin_pool loop; do
  modprobe "$m" 2>/dev/null || echo "== disklet-vm: modprobe $m failed"
done
udevadm trigger --action=add --subsystem-match=block
udevadm settle -t 120 || echo "== disklet-vm: udev did not settle"
mkdir -p /var/lib/disklet-vm-state
mount /dev/disk/by-id/virtio-disklet-state /var/lib/disklet-vm-state || echo "== disklet-vm: no state disk"
tar -xf /dev/disk/by-id/virtio-disklet-job -C /run/job 2>/dev/null || echo "== disklet-vm: no job disk"
echo "== disklet-vm: job start $(cut -d' ' -f1 /proc/uptime)s"
status=1
if [ -x /run/job/job.sh ]; then
  /run/job/job.sh
  status=$?
fi
echo "$status" > /run/results/exit
echo "== disklet-vm: job exit $status $(cut -d' ' -f1 /proc/uptime)s"
cut -d' ' -f1 /proc/uptime > /run/results/uptime
dmesg > /run/results/dmesg.txt 2>/dev/null
umount /var/lib/disklet-vm-state 2>/dev/null
( cd /run/results && tar -cf /dev/disk/by-id/virtio-disklet-results . ) || echo "== disklet-vm: results not written"
sync
echo o > /proc/sysrq-trigger
sleep 30
