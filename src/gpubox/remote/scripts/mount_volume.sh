#!/usr/bin/env bash
# gpubox data volume: format it only when it is new, mount it, keep it mounted across reboots.
#
# Run by gpubox (gpubox/remote/data_volume.py) through the box's runner after the
# volume is attached:  bash -s -- VOLUME_ID [MOUNT_DIR]  with this script on stdin.
# Idempotent: a second run finds the filesystem, the fstab line and the mount in place.
# On Nitro instances an EBS volume appears as /dev/nvmeXn1; its stable name carries the
# volume id: /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123... (no dash).
# Prints one line for gpubox:  ::gpubox volume status=formatted|existing device=... uuid=...
# Parameters for tests (there is no block device where the tests run):
#   GPUBOX_DISK_BY_ID (default /dev/disk/by-id), GPUBOX_FSTAB (default /etc/fstab),
#   GPUBOX_DEVICE_WAIT seconds to wait for the device to appear (default 60).
set -euo pipefail

VOLUME_ID="${1:?usage: mount_volume.sh VOLUME_ID [MOUNT_DIR]}"
MOUNT_DIR="${2:-$HOME/data}"
BY_ID="${GPUBOX_DISK_BY_ID:-/dev/disk/by-id}"
FSTAB="${GPUBOX_FSTAB:-/etc/fstab}"
WAIT="${GPUBOX_DEVICE_WAIT:-60}"
OWNER="$(id -un)"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

find_device() {
  local serial="${VOLUME_ID//-/}" name
  for name in "nvme-Amazon_Elastic_Block_Store_${serial}" "nvme-Amazon_Elastic_Block_Store_${serial}-ns-1"; do
    if [[ -e "$BY_ID/$name" ]]; then
      readlink -f "$BY_ID/$name"
      return 0
    fi
  done
  return 1
}

device=""
for _ in $(seq "$WAIT"); do
  if device="$(find_device)"; then break; fi
  sleep 1
done
if [[ -z "$device" ]] && ! device="$(find_device)"; then
  echo "error: volume $VOLUME_ID is attached but no device for it appeared under $BY_ID" >&2
  exit 3
fi

mkdir -p "$MOUNT_DIR"
if mountpoint -q "$MOUNT_DIR"; then
  mounted="$(findmnt -n -o SOURCE "$MOUNT_DIR")"
  if [[ "$(readlink -f "$mounted")" != "$device" ]]; then
    echo "error: $MOUNT_DIR already holds another disk ($mounted), not volume $VOLUME_ID" >&2
    exit 6
  fi
# Mounting over files would hide them: say so instead (they may be copies made earlier).
elif [[ -n "$(ls -A "$MOUNT_DIR")" ]]; then
  echo "error: $MOUNT_DIR already has files; the volume would hide them." >&2
  echo "move them aside (mv $MOUNT_DIR $MOUNT_DIR.old) and run gpubox up again" >&2
  exit 5
fi

# blkid exits 2 for a device with no filesystem: only then is it new. Any other
# failure stops here: a disk is never formatted on a guess.
rc=0
fstype="$(as_root blkid -o value -s TYPE "$device")" || rc=$?
if [[ $rc -ne 0 && $rc -ne 2 ]]; then
  echo "error: cannot read $device (blkid exited $rc); nothing was formatted" >&2
  exit 7
fi
if [[ $rc -eq 2 && -z "$fstype" ]]; then
  as_root mkfs.ext4 -q -L gpubox-data "$device"
  status=formatted
  fstype=ext4
else
  status=existing
fi
uuid="$(as_root blkid -o value -s UUID "$device")"
if [[ -z "$uuid" ]]; then
  echo "error: $device has a $fstype filesystem without a UUID" >&2
  exit 4
fi

# nofail: a box whose volume was detached or deleted still boots.
line="UUID=$uuid $MOUNT_DIR $fstype defaults,nofail,x-systemd.device-timeout=10s 0 2"
if ! grep -qs "^UUID=$uuid " "$FSTAB"; then
  printf '%s\n' "$line" | as_root tee -a "$FSTAB" >/dev/null
fi
if ! mountpoint -q "$MOUNT_DIR"; then
  as_root mount "$MOUNT_DIR"
fi
# A volume grown since it was formatted: grow its filesystem to the new size (online).
case "$fstype" in
  ext4 | ext3 | ext2) as_root resize2fs "$device" >/dev/null 2>&1 || true ;;
  xfs) as_root xfs_growfs "$MOUNT_DIR" >/dev/null 2>&1 || true ;;
esac
if [[ $status == formatted ]]; then
  as_root chown "$OWNER:" "$MOUNT_DIR"
fi
echo "::gpubox volume status=$status device=$device uuid=$uuid fstype=$fstype"
