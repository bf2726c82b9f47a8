#!/usr/bin/env bash
# Run the local backend on a kernel booted with the unified cgroup v2 hierarchy:
# a QEMU/KVM guest (Debian 12, Debian's kernel) with this checkout copied in.
#
#   scripts/cgroup-v2-vm.sh [build|run|all] [--force] [--out DIR] [--tests "PYTEST ARGS"]
#                           [--mode unified|hybrid|debug]
#
# build  build/cgroup-v2-vm/: a bookworm root filesystem made with debootstrap from
#        Debian's mirror (the one container/build.sh uses, VR_DEBIAN_MIRROR), with
#        linux-image-amd64, systemd and scripts/setup.sh's apt packages; a venv at
#        /opt/vr-venv from wheels built on the host (build/cgroup-v2-vm/wheelhouse,
#        the host venv's versions), so the guest never needs PyPI. Packed as
#        rootfs.img (ext4) plus the kernel and initrd. Cached: rebuilt only when
#        the package list, pyproject.toml or this script's image recipe changes
#        (or --force).
# run    boots the image (-snapshot: the cached image is never written) with
#        systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all, 2 vCPUs, 4 GiB.
#        The checkout is shared read-only over virtio-9p and copied into the
#        guest; scripts/cgroup-v2-vm-guest.sh runs there as a systemd unit:
#        `visual-runtime doctor`, a session round trip and the limits tests,
#        writing its output and results.json to a job folder (a second 9p share,
#        --out, default build/cgroup-v2-vm/last-run), then powers the guest off.
# all    both (the default).
# --mode hybrid boots the same image as a hybrid host instead
#        (systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=memory: v1 controllers
#        plus systemd's cgroup2 mount at /sys/fs/cgroup/unified, which gets the
#        memory controller) and runs only `visual-runtime doctor` there.
# --mode debug boots the cgroup v2 guest and runs every <n>.sh put into
#        OUT/cmd/ (output in <n>.out, status in <n>.rc) until OUT/cmd/stop exists.
#
# Networking: the image build (debootstrap and apt in a chroot) talks only to the
# Debian mirror; the guest gets QEMU's user-mode network with restrict=on, i.e.
# an interface and a default route that reach nothing outside the guest.
# Needs root (debootstrap, chroot, mkfs) and qemu-system-x86. Accelerator
# (VR_VM_ACCEL=auto|kvm|tcg): KVM when the CPU has vmx/svm; otherwise QEMU's
# TCG emulation (several times slower). A /dev/kvm backed by kvm_pvm (a nested
# "pagetable VM", as in Firecracker-style sandboxes) runs only PVM-enabled guest
# kernels, not Debian's: auto picks TCG there.
# Takes ~10-15 minutes to build and ~10 minutes to run on 2 cores, which is why it is
# part of the benchmarks' full mode (`python -m benchmarks --only cgroup_v2_vm`),
# not of CI's tests.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VM="$ROOT/build/cgroup-v2-vm"
MIRROR="${VR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${VR_PYTHON:-$ROOT/.venv/bin/python}"
MEMORY_MB="${VR_VM_MEMORY_MB:-4096}"
CPUS="${VR_VM_CPUS:-2}"
TIMEOUT_S="${VR_VM_TIMEOUT_S:-3000}"
ACCEL="${VR_VM_ACCEL:-auto}"
NICE=(nice -n 10)
FORCE=0
TARGET=all
OUT="$VM/last-run"
TESTS=""
MODE=unified
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --out) OUT="$2"; shift ;;
    --tests) TESTS="$2"; shift ;;
    --mode) MODE="$2"; shift ;;
    build|run|all) TARGET="$1" ;;
    *) echo "usage: $0 [build|run|all] [--force] [--out DIR] [--tests \"PYTEST ARGS\"]" >&2; exit 2 ;;
  esac
  shift
done

T0=$(date +%s)
step() { printf '==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

# The image recipe: guest-only packages plus scripts/setup.sh's list (read from it,
# so the guest has what a user's machine gets).
GUEST_PACKAGES=(linux-image-amd64 systemd-sysv udev kmod dbus iputils-ping)
setup_packages() {
  sed -n '/^APT_PACKAGES=(/,/^)/p' "$ROOT/scripts/setup.sh" | sed '1d;$d' | tr -s ' \n' '\n' | sed '/^$/d'
}
recipe_hash() {
  { printf '%s\n' "${GUEST_PACKAGES[@]}"; setup_packages; cat "$ROOT/pyproject.toml";
    sed -n '/^build_image()/,/^}/p' "$0"; } | sha256sum | cut -c1-16
}

build_wheels() {
  step "wheels: pip wheel of the project's dependencies (host venv's versions) into $VM/wheelhouse"
  mkdir -p "$VM/wheelhouse"
  "$PYTHON" -m pip freeze --exclude-editable | grep -iv '^visual[-_]runtime' > "$VM/constraints.txt"
  # the host venv's wheels first (container/build.sh's wheelhouse), PyPI for the rest
  PIP_DISABLE_PIP_VERSION_CHECK=1 "${NICE[@]}" "$PYTHON" -m pip wheel --quiet \
    --wheel-dir "$VM/wheelhouse" --find-links "$ROOT/build/wheelhouse" --find-links "$VM/wheelhouse" \
    --constraint "$VM/constraints.txt" "$ROOT[test]" setuptools wheel > "$VM/pip-wheel.log" 2>&1 \
    || { cat "$VM/pip-wheel.log" >&2; exit 1; }
  rm -f "$VM"/wheelhouse/visual_runtime-*.whl
}

chroot_mounts() {
  local dir="$1"
  mount -t proc proc "$dir/proc"
  mount -t sysfs sys "$dir/sys"
  mount --bind /dev "$dir/dev"
  mount --bind /dev/pts "$dir/dev/pts"
}
chroot_umounts() {
  local dir="$1" m
  for m in dev/pts dev sys proc; do
    mountpoint -q "$dir/$m" && umount -l "$dir/$m"
  done
  return 0
}

build_image() {
  local dir="$VM/rootfs" pkgs
  chroot_umounts "$dir" 2>/dev/null || true
  rm -rf "$dir" "$VM/rootfs.img" "$VM/vmlinuz" "$VM/initrd.img" "$VM/image.hash"
  mkdir -p "$dir"
  step "image: debootstrap --variant=minbase bookworm from $MIRROR"
  "${NICE[@]}" debootstrap --variant=minbase bookworm "$dir" "$MIRROR" > "$VM/debootstrap.log" 2>&1 \
    || { tail -30 "$VM/debootstrap.log" >&2; exit 1; }
  echo "deb $MIRROR bookworm main" > "$dir/etc/apt/sources.list"
  trap 'chroot_umounts "$VM/rootfs"' EXIT
  chroot_mounts "$dir"
  pkgs="${GUEST_PACKAGES[*]} $(setup_packages | tr '\n' ' ')"
  step "image: apt-get install $pkgs"
  # no services start in the chroot
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"; chmod +x "$dir/usr/sbin/policy-rc.d"
  # the initrd must find a virtio disk
  mkdir -p "$dir/etc/initramfs-tools"
  printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> "$dir/etc/initramfs-tools/modules"
  # shellcheck disable=SC2086
  "${NICE[@]}" chroot "$dir" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends $pkgs" > "$VM/apt.log" 2>&1 \
    || { tail -30 "$VM/apt.log" >&2; exit 1; }
  rm -f "$dir/usr/sbin/policy-rc.d"
  step "image: venv /opt/vr-venv from $VM/wheelhouse (Debian's python3)"
  mkdir -p "$dir/opt/wheelhouse"
  cp "$VM"/wheelhouse/*.whl "$dir/opt/wheelhouse/"
  "${NICE[@]}" chroot "$dir" /bin/sh -c 'python3 -m venv /opt/vr-venv \
      && /opt/vr-venv/bin/pip install -q --no-index --find-links /opt/wheelhouse /opt/wheelhouse/*.whl' \
      > "$VM/venv.log" 2>&1 || { tail -30 "$VM/venv.log" >&2; exit 1; }
  rm -rf "$dir/opt/wheelhouse" "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  chroot_umounts "$dir"
  trap - EXIT
  step "image: guest configuration (console, network, the job unit)"
  echo vr-cgroup-v2 > "$dir/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 vr-cgroup-v2\n::1 localhost\n' > "$dir/etc/hosts"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$dir/etc/fstab"
  chroot "$dir" passwd -d root >/dev/null
  mkdir -p "$dir/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n' > "$dir/etc/systemd/network/10-slirp.network"
  chroot "$dir" systemctl enable systemd-networkd >/dev/null 2>&1 || true
  mkdir -p "$dir/mnt/src" "$dir/mnt/job"
  cat > "$dir/etc/systemd/system/vr-job.service" <<'EOF'
[Unit]
Description=Visual Runtime cgroup v2 job (scripts/cgroup-v2-vm-guest.sh from the host)
After=multi-user.target network.target
[Service]
Type=oneshot
ExecStartPre=/sbin/modprobe -a 9p 9pnet_virtio
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,ro src /mnt/src
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,rw,access=any job /mnt/job
ExecStart=/bin/bash /mnt/job/guest.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/vr-job.service "$dir/etc/systemd/system/multi-user.target.wants/vr-job.service"
  cp -L "$dir/vmlinuz" "$VM/vmlinuz"
  cp -L "$dir/initrd.img" "$VM/initrd.img"
  step "image: mkfs.ext4 -d ($(du -sh "$dir" | cut -f1))"
  truncate -s 8G "$VM/rootfs.img"
  mkfs.ext4 -q -F -L vr-root -d "$dir" "$VM/rootfs.img"
  rm -rf "$dir"
  recipe_hash > "$VM/image.hash"
  step "image: ready ($(du -sh --apparent-size "$VM/rootfs.img" | cut -f1) apparent, $(du -sh "$VM/rootfs.img" | cut -f1) used)"
}

build() {
  mkdir -p "$VM"
  if [ "$FORCE" = 0 ] && [ -f "$VM/image.hash" ] && [ -f "$VM/rootfs.img" ] \
      && [ "$(cat "$VM/image.hash")" = "$(recipe_hash)" ]; then
    step "image: $VM/rootfs.img up to date"
    return
  fi
  [ "$(id -u)" = 0 ] || { echo "building the image needs root (debootstrap, chroot)" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "apt-get install debootstrap" >&2; exit 1; }
  build_wheels
  build_image
}

pick_accel() {
  local want="$ACCEL"
  if [ "$want" = auto ]; then
    want=tcg
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
      want=kvm
    fi
  fi
  case "$want" in
    kvm) echo "-accel kvm -cpu host" ;;
    tcg) echo "-accel tcg,thread=multi -cpu max" ;;
    *) echo "VR_VM_ACCEL=auto|kvm|tcg" >&2; exit 2 ;;
  esac
}

run() {
  command -v qemu-system-x86_64 >/dev/null \
    || { echo "apt-get install qemu-system-x86 (qemu-system-x86_64 is missing)" >&2; exit 1; }
  local accel
  accel="$(pick_accel)"
  [ -f "$VM/rootfs.img" ] || { echo "no image: run $0 build" >&2; exit 1; }
  rm -rf "$OUT"
  mkdir -p "$OUT"
  cp "$ROOT/scripts/cgroup-v2-vm-guest.sh" "$OUT/guest.sh"
  printf '%s\n' "$TESTS" > "$OUT/tests.txt"
  echo "$MODE" > "$OUT/mode.txt"
  local cgroups
  case "$MODE" in
    unified) cgroups="systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" ;;
    hybrid) cgroups="systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=memory" ;;
    debug) cgroups="systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" ;;
    *) echo "--mode unified|hybrid|debug" >&2; exit 2 ;;
  esac
  step "run: booting the guest ($cgroups, ${CPUS} vCPUs, ${MEMORY_MB} MiB, $accel); console in $OUT/console.log"
  echo "$accel" > "$OUT/accel.txt"
  local t_boot rc=0
  t_boot=$(date +%s)
  timeout --foreground "$TIMEOUT_S" qemu-system-x86_64 \
    $accel -smp "$CPUS" -m "$MEMORY_MB" -nographic -no-reboot \
    -kernel "$VM/vmlinuz" -initrd "$VM/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 $cgroups panic=-1 quiet" \
    -drive "file=$VM/rootfs.img,format=raw,if=virtio,cache=unsafe" -snapshot \
    -virtfs "local,path=$ROOT,mount_tag=src,security_model=none,readonly=on" \
    -virtfs "local,path=$OUT,mount_tag=job,security_model=none" \
    -nic "user,model=virtio-net-pci,restrict=on" \
    -serial "file:$OUT/console.log" -monitor none -display none < /dev/null \
    || rc=$?
  step "run: guest exited (status $rc, $(( $(date +%s) - t_boot )) s)"
  if [ ! -f "$OUT/results.json" ]; then
    echo "the guest wrote no results.json; last console lines:" >&2
    tail -40 "$OUT/console.log" >&2
    exit 1
  fi
  cat "$OUT/summary.txt" 2>/dev/null || true
}

case "$TARGET" in
  build) build ;;
  run) run ;;
  all) build; run ;;
esac
