#!/usr/bin/env bash
# Builds the lab's VM image: a Debian bookworm root with the Debian kernel and OpenZFS 2.3.x
# (zfs-dkms + zfsutils-linux from bookworm-backports), ssh for root with a generated key.
#
# Usage: lab/build-image.sh [--cache-dir DIR] [--force] [--print-hash] [--print-dir]
#
# The result is cached under DIR/<recipe hash>/ (DIR: $ZFLEET_LAB_CACHE, else
# /var/cache/zfleet-lab as root, else ~/.cache/zfleet-lab): root.raw (ext4, booted as /dev/vda
# with no bootloader), vmlinuz, initrd.img, id_ed25519(.pub) and image.json. The hash covers this
# script and everything under lab/recipe/, so an unchanged recipe is never rebuilt and any change
# builds a new image. workers/lab/recipe.py computes the same hash; keep the two in step.
# Needs root (debootstrap, chroot, mounts), debootstrap, e2fsprogs and ssh-keygen.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${ZFLEET_LAB_MIRROR:-http://deb.debian.org/debian}
force=0 print_hash=0 print_dir=0
if [ -n "${ZFLEET_LAB_CACHE:-}" ]; then cache=$ZFLEET_LAB_CACHE
elif [ "$(id -u)" = 0 ]; then cache=/var/cache/zfleet-lab
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/zfleet-lab; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) cache=$2; shift ;;
    --force) force=1 ;;
    --print-hash) print_hash=1 ;;
    --print-dir) print_dir=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# sha256 over "<sha256>  <path>" lines of every recipe file, paths relative to lab/, sorted
# bytewise; the first 16 hex digits name the image.
recipe_hash() {
  (cd "$here" && find build-image.sh recipe -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
hash=$(recipe_hash)
out=$cache/$hash
if [ "$print_hash" = 1 ]; then echo "$hash"; exit 0; fi
if [ "$print_dir" = 1 ]; then echo "$out"; exit 0; fi

if [ "$(id -u)" != 0 ]; then echo "build-image: needs root (debootstrap, chroot)" >&2; exit 1; fi
mkdir -p "$cache"
exec 9>"$cache/.lock-$hash"
flock 9  # one build per recipe at a time; a second caller waits and then finds the cache
if [ -f "$out/image.json" ] && [ "$force" = 0 ]; then
  echo "build-image: cached: $out"; exit 0
fi

started=$(date +%s)
work=$(mktemp -d "$cache/.build-$hash.XXXXXX")
root=$work/root
unmount_all() {
  for m in dev/pts dev sys proc; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m"; fi
  done
}
cleanup() {
  unmount_all
  # Never delete through a live bind mount of the host's /dev.
  if findmnt -rno TARGET | grep -q "^$work/"; then
    echo "build-image: mounts remain under $work; not deleting it" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
mkdir -p "$root" "$work/out"

include=$(grep -v '^[[:space:]]*#' "$here/recipe/packages.txt" | grep -v '^[[:space:]]*$' | paste -sd, -)
echo "build-image: debootstrap bookworm into $root"
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror"

cp -a "$here/recipe/rootfs/." "$root/"
mkdir -p "$root/tmp/zfleet-recipe"
cp "$here"/recipe/*.txt "$here/recipe/setup-chroot.sh" "$root/tmp/zfleet-recipe/"
ssh-keygen -q -t ed25519 -N '' -C "zfleet-lab-$hash" -f "$work/out/id_ed25519"
cp "$work/out/id_ed25519" "$work/out/id_ed25519.pub" "$root/tmp/zfleet-recipe/"
cp /etc/resolv.conf "$root/etc/resolv.conf"

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
chroot "$root" /bin/sh /tmp/zfleet-recipe/setup-chroot.sh
unmount_all
# QEMU's user-mode network serves DNS at 10.0.2.3.
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"

kver=$(cat "$root/etc/zfleet-lab-kernel")
zver=$(chroot "$root" dpkg-query -W -f '${Version}' zfsutils-linux)
cp "$root/boot/vmlinuz-$kver" "$work/out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/out/initrd.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 1024 ))
truncate -s "${size_mb}M" "$work/out/root.raw"
mkfs.ext4 -q -F -L zlab-root -d "$root" "$work/out/root.raw"
chmod 444 "$work/out/root.raw"  # overlays read it; nothing writes to the base

finished=$(date +%s)
cat > "$work/out/image.json" <<JSON
{"hash": "$hash", "kernel": "$kver", "zfs": "$zver", "root_mb": $size_mb,
 "build_seconds": $(( finished - started )), "built_at": $finished}
JSON
rm -rf "$out"
mv "$work/out" "$out"
echo "build-image: built $out in $(( finished - started )) s (kernel $kver, zfs $zver)"
