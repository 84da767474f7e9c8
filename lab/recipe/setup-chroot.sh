#!/bin/sh
# Runs inside the image's root (chroot) after debootstrap and the rootfs overlay are in place.
# Installs the kernel, then OpenZFS with DKMS built for *that* kernel, then the container
# runtime (podman, runc, CRIU), then tidies the root.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
recipe=/tmp/zfleet-recipe
pkgs() { grep -v '^[[:space:]]*#' "$1" | grep -v '^[[:space:]]*$' | tr '\n' ' '; }
apt_install() { apt-get install -y -q --no-install-recommends "$@"; }

# Services must not start inside the chroot while packages are installed.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

apt-get update -q
# shellcheck disable=SC2046
apt_install $(pkgs "$recipe/kernel-packages.txt")
kver=$(ls /lib/modules | sort -V | tail -n 1)
echo "setup: image kernel is $kver"

# DKMS builds for `uname -r`, which in a chroot is the host's kernel. For the install below,
# uname reports the image's kernel, so the module is built for the kernel that will boot.
dpkg-divert --local --rename --divert /usr/bin/uname.zfleet-real --add /usr/bin/uname
cat > /usr/bin/uname <<UNAME
#!/bin/sh
case "\${1:-}" in -r|--kernel-release) echo "$kver"; exit 0 ;; esac
exec /usr/bin/uname.zfleet-real "\$@"
UNAME
chmod 755 /usr/bin/uname
# shellcheck disable=SC2046
apt_install -t bookworm-backports $(pkgs "$recipe/zfs-packages.txt")
zver=$(dpkg-query -W -f '${Version}' zfs-dkms | sed 's/^[0-9]*://; s/-.*//')
if ! modinfo -k "$kver" zfs >/dev/null 2>&1; then
  dkms install "zfs/$zver" -k "$kver"
fi
rm /usr/bin/uname
dpkg-divert --local --rename --remove /usr/bin/uname
echo "setup: zfs module: $(modinfo -k "$kver" -F version zfs) for $kver"
# shellcheck disable=SC2046
apt_install $(pkgs "$recipe/container-packages.txt")
echo "setup: podman $(dpkg-query -W -f '${Version}' podman), criu $(dpkg-query -W -f '${Version}' criu)"

# Identity that must differ per VM is made at first boot, not baked in.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
echo zlab > /etc/hostname
systemctl enable systemd-networkd ssh
# Nothing periodic competes with tests for a slow emulated CPU.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  man-db.timer systemd-timesyncd.service >/dev/null 2>&1 || true

install -d -m 700 /root/.ssh
install -m 600 "$recipe/id_ed25519.pub" /root/.ssh/authorized_keys
# The private key too, so lab hosts can `zfs send | ssh` to each other through 10.0.2.2.
install -m 600 "$recipe/id_ed25519" /root/.ssh/id_ed25519
printf 'Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n' \
  > /root/.ssh/config

rm -f /usr/sbin/policy-rc.d
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
echo "$kver" > /etc/zfleet-lab-kernel
