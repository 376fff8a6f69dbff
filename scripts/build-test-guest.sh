#!/usr/bin/env bash
# Builds the tiny Linux test guest used by the qemu and libvirt backend tests
# and benchmarks, from Debian packages alone (see NOTES.md "QEMU directly"):
#
#   vmlinuz    the current Debian cloud kernel (linux-image-6.1.0-*-cloud-amd64)
#   initrd.gz  busybox-static + virtio/evdev/button modules; /init brings eth0
#              up as 10.0.2.15/24 (gw 10.0.2.2, QEMU user networking), serves
#              a small page with `httpd -p 80`, and powers off on the ACPI
#              power button (acpid -> poweroff -f)
#
# Output goes to $JITSU_GUEST_CACHE, else <repo root>/.cache/guest/, and is
# reused while this script's content and the kernel version stay the same, so
# a rerun is instant. Prints the output directory on stdout.
#
# Usage: scripts/build-test-guest.sh [--force]
set -euo pipefail

script_path="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "$script_path")/.." && pwd)"
cache_dir="${JITSU_GUEST_CACHE:-$repo_root/.cache/guest}"
force=0
[[ "${1:-}" == "--force" ]] && force=1

log() { echo "build-test-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

apt_install() {
  log "installing $*"
  local cmd=(apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "$@")
  [[ $(id -u) -eq 0 ]] || cmd=(sudo "${cmd[@]}")
  if ! DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >&2; then
    log "install failed; refreshing package lists and retrying"
    if [[ $(id -u) -eq 0 ]]; then apt-get update -o DPkg::Lock::Timeout=600 >&2; else sudo apt-get update >&2; fi
    DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >&2
  fi
}

# The kernel package the cloud-amd64 meta-package points at, else the newest
# linux-image-6.1.0-N-cloud-amd64 apt knows about.
kernel_package() {
  local pkg
  pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | head -n1)"
  if [[ -z "$pkg" ]]; then
    pkg="$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' \
      | sort -t- -k4,4n | tail -n1)"
  fi
  echo "$pkg"
}

script_hash="$(sha256sum "$script_path" | cut -c1-16)"
have_cache() { [[ $force -eq 0 && -f "$cache_dir/key" && -f "$cache_dir/vmlinuz" && -f "$cache_dir/initrd.gz" ]]; }

# Fast path: built by this very script, and apt's package lists have not
# changed since (so apt would pick the same kernel): nothing to ask apt.
if have_cache && grep -qx "script=$script_hash" "$cache_dir/key" \
  && [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -newer "$cache_dir/key" -print -quit 2>/dev/null)" ]]; then
  echo "$cache_dir"
  exit 0
fi

kpkg="$(kernel_package)"
if [[ -z "$kpkg" ]]; then
  # No package lists (fresh machine): a cached guest built by this script still serves.
  if have_cache && grep -qx "script=$script_hash" "$cache_dir/key"; then
    echo "$cache_dir"
    exit 0
  fi
  log "no linux-image-6.1.0-*-cloud-amd64 known to apt; running apt-get update"
  if [[ $(id -u) -eq 0 ]]; then apt-get update -o DPkg::Lock::Timeout=600 >&2; else sudo apt-get update >&2; fi
  kpkg="$(kernel_package)"
  [[ -n "$kpkg" ]] || die "apt knows no linux-image-6.1.0-*-cloud-amd64 package"
fi
# The package name carries the kernel's ABI version (6.1.0-N), which is what
# the key needs; one apt-cache call keeps a cached rerun quick.
key="script=$script_hash
kernel=$kpkg"

cached() {
  if have_cache && [[ "$(cat "$cache_dir/key")" == "$key" ]]; then
    touch "$cache_dir/key" # newer than the package lists again: the next run takes the fast path
    echo "$cache_dir"
    exit 0
  fi
}
cached

# One build at a time (the qemu and libvirt tests may ask at once); the
# winner's result serves the others.
mkdir -p "$cache_dir"
exec 9>"$cache_dir/.lock"
flock -w 900 9 || die "timed out waiting for another build of the test guest ($cache_dir/.lock)"
cached

# Tools: busybox-static (the guest's userland), cpio (packing), gzip.
static_busybox() {
  [[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -x httpd >/dev/null \
    && ! ldd /bin/busybox >/dev/null 2>&1
}
static_busybox || apt_install busybox-static
command -v cpio >/dev/null || apt_install cpio
command -v gzip >/dev/null || apt_install gzip

log "building the test guest from $kpkg into $cache_dir"
work="$(mktemp -d "${TMPDIR:-/tmp}/jitsu-guest.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 777 "$work" # lets apt's _apt user write the download
(cd "$work" && apt-get download "$kpkg" >&2) || die "apt-get download $kpkg failed"
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/kernel"
modroot="$(echo "$work"/kernel/lib/modules/*)"
kname="$(basename "$modroot")"
[[ -d "$modroot" ]] || die "no modules directory in $kpkg"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/acpi/PWRF,www,lib/modules}
cp /bin/busybox "$root/bin/busybox"

# Load order matters: insmod does not resolve dependencies.
modules=(
  drivers/virtio/virtio_ring
  drivers/virtio/virtio
  drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci
  drivers/virtio/virtio_mmio
  net/core/failover
  drivers/net/net_failover
  drivers/net/virtio_net
  drivers/block/virtio_blk
  drivers/input/evdev
  drivers/acpi/button
)
for m in "${modules[@]}"; do
  src="$modroot/kernel/$m.ko"
  if [[ -f "$src" ]]; then cp "$src" "$root/lib/modules/"
  elif [[ -f "$src.xz" ]]; then xz -dc "$src.xz" >"$root/lib/modules/$(basename "$m").ko"
  else die "module $m not found in $kpkg"
  fi
done
printf '%s\n' "${modules[@]##*/}" >"$root/lib/modules/order"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/order
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
httpd -p 80 -h /www
acpid -c /etc/acpi -l /tmp/acpid.log
echo "jitsu-test-guest: up" >/dev/console
while :; do sleep 3600; done
EOF
chmod 755 "$root/init"

# busybox acpid maps the power button to the action PWRF/00000080 under -c DIR.
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "jitsu-test-guest: power button, powering off" >/dev/console
poweroff -f
EOF
chmod 755 "$root/etc/acpi/PWRF/00000080"

cat >"$root/www/index.html" <<EOF
<!doctype html>
<html><head><title>jitsu test guest</title></head>
<body><h1>jitsu test guest</h1><p>Served by busybox httpd on $kname.</p></body></html>
EOF

mkdir -p "$cache_dir"
cp "$work"/kernel/boot/vmlinuz-* "$work/vmlinuz"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 >"$work/initrd.gz"
# Replace atomically so a concurrent reader never sees half a file.
mv -f "$work/vmlinuz" "$cache_dir/vmlinuz.tmp.$$" && mv -f "$cache_dir/vmlinuz.tmp.$$" "$cache_dir/vmlinuz"
mv -f "$work/initrd.gz" "$cache_dir/initrd.gz.tmp.$$" && mv -f "$cache_dir/initrd.gz.tmp.$$" "$cache_dir/initrd.gz"
printf '%s\n' "$key" >"$cache_dir/key"
log "done: $cache_dir/vmlinuz $cache_dir/initrd.gz"
echo "$cache_dir"
