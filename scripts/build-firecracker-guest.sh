#!/usr/bin/env bash
# Build a bootable Firecracker guest that meets docs/backends/firecracker-guest.md, from Debian
# packages only, as root on Debian:
#   OUTDIR/vmlinux       the uncompressed ELF kernel out of Debian's current linux-image-*-amd64
#   OUTDIR/initrd.cpio   newc initramfs: static busybox, the kernel's modules for the root
#                        disk and vsock (those it has as modules), guest/firecracker/initramfs-init
#   OUTDIR/rootfs.ext4   static busybox, the listener (guest/firecracker/listener.c) at
#                        /usr/local/bin/sandbox-guest, guest/firecracker/init as /sbin/init
#   OUTDIR/target.yaml   a `targets:` entry for the exporter's config naming them
#   OUTDIR/cache/        the kernel package, kept for the next build
# Boot arguments the backend gives:
#   console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd quiet
# (Firecracker adds its virtio_mmio.device= entries; the initramfs's /init is the default rdinit).
#   bash scripts/build-firecracker-guest.sh OUTDIR
# FIRECRACKER: the VMM target.yaml names (default: firecracker on PATH, else
# /usr/local/bin/firecracker). Missing build tools are installed with apt-get.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build-firecracker-guest: run as root (apt-get, mknod)" >&2; exit 1; }
guest=$(cd "$(dirname "$0")/../guest/firecracker" && pwd)
mkdir -p "$1/cache"
out=$(cd "$1" && pwd)
export DEBIAN_FRONTEND=noninteractive
say() { echo "build-firecracker-guest: $*"; }
die() { say "$*" >&2; exit 1; }

updated=
apt_update() { [ -n "$updated" ] || { apt-get update -q >&2; updated=1; }; }
ensure() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  apt_update
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}
ensure gcc libc6-dev busybox-static e2fsprogs kmod python3

work=$(mktemp -d /tmp/build-firecracker-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The kernel package: the one linux-image-amd64 currently depends on, kept in OUTDIR/cache.
resolve() {
  pkg=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | sed -n 's/^Depends: //p' |
    tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
  version=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$pkg" ] && [ -n "$version" ] || return 1
  deb=$out/cache/${pkg}_${version//:/%3a}_amd64.deb  # as apt-get download names it
}
fetch() {
  [ -s "$deb" ] && return
  say "downloading $pkg $version"
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2) || return 1
  find "$out/cache" -name 'linux-image-*.deb' -delete  # an older kernel's
  mv "$work/$(basename "$deb")" "$deb"
}
[ "$(dpkg --print-architecture)" = amd64 ] || die "this builds an x86_64 guest: run it on Debian amd64"
if ! { resolve && fetch; }; then  # package lists missing or out of date
  apt_update
  resolve || die "apt-cache knows no linux-image-amd64"
  fetch || die "cannot download $pkg=$version"
fi
dpkg-deb -x "$deb" "$work/kernel"
kver=${pkg#linux-image-}
config=$work/kernel/boot/config-$kver
[ -f "$config" ] || die "$pkg has no /boot/config-$kver"
if grep -Eq '^CONFIG_(KERNEL|MODULE_COMPRESS)_ZSTD=y' "$config"; then ensure zstd; fi
if grep -q '^CONFIG_KERNEL_LZ4=y' "$config"; then ensure lz4; fi

# vmlinux: the compressed payload of the bzImage, found by its magic, decompressed until
# it is an ELF.
python3 - "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinux" <<'PY'
import bz2, lzma, subprocess, sys, zlib

image, target = sys.argv[1:]
data = open(image, "rb").read()
view = memoryview(data)

def stdlib(make):
    def run(payload, limit=None):
        return make().decompress(payload, limit) if limit else make().decompress(payload)
    return run

def tool(argv):
    def run(payload, limit=None):  # the tools stop at the trailing bytes with an error: ignored
        return subprocess.run(argv, input=payload, capture_output=True).stdout
    return run

formats = {
    "gzip": (b"\x1f\x8b\x08", stdlib(lambda: zlib.decompressobj(31))),
    "xz": (b"\xfd7zXZ\x00", stdlib(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ))),
    "bzip2": (b"BZh", stdlib(bz2.BZ2Decompressor)),
    "zstd": (b"\x28\xb5\x2f\xfd", tool(["zstd", "-dcq"])),
    "lz4": (b"\x02\x21\x4c\x18", tool(["lz4", "-dcq"])),
}
for name, (magic, decompress) in formats.items():
    at = data.find(magic)
    while at >= 0:
        try:
            if decompress(view[at:], 4) == b"\x7fELF":
                elf = decompress(view[at:])
                if elf.startswith(b"\x7fELF"):
                    open(target, "wb").write(elf)
                    print(f"{name} payload at offset {at}: {len(elf)} bytes of ELF")
                    sys.exit(0)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
            pass
        at = data.find(magic, at + 1)
sys.exit(f"no gzip, xz, bzip2, zstd or lz4 payload in {image} decompresses to an ELF")
PY

# The modules: those of the drivers the guest needs that this kernel has as modules (=m),
# with what they depend on, in load order; decompressed for busybox insmod.
depmod -b "$work/kernel" "$kver"
python3 - "$config" "$work/kernel/lib/modules/$kver" "$work/initrd/modules" <<'PY'
import gzip, lzma, os, re, subprocess, sys

config_path, moddir, target = sys.argv[1:]
config = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", open(config_path).read(), re.M))

def fail(why):
    sys.exit(f"build-firecracker-guest: {config_path}: {why}")

if config.get("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES") != "y":
    # Firecracker declares its virtio-mmio devices on the command line and in its ACPI DSDT
    # (Firecracker 1.12 does); without the first, the kernel must read the second.
    if config.get("CONFIG_ACPI") != "y":
        fail("neither CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES nor CONFIG_ACPI is y: "
             "this kernel cannot find Firecracker's virtio-mmio devices")
    print("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set: virtio-mmio devices come from ACPI")

needed = [  # (config symbol, module, what for)
    ("CONFIG_VIRTIO_MMIO", "virtio_mmio", "Firecracker's devices"),
    ("CONFIG_VIRTIO_BLK", "virtio_blk", "the root disk"),
    ("CONFIG_CRYPTO_CRC32C", "crc32c_generic", "ext4's checksums (a soft dependency)"),
    ("CONFIG_EXT4_FS", "ext4", "the root filesystem"),
    ("CONFIG_VSOCKETS", "vsock", "vsock"),
    ("CONFIG_VIRTIO_VSOCKETS_COMMON", "vmw_vsock_virtio_transport_common", "vsock"),
    ("CONFIG_VIRTIO_VSOCKETS", "vmw_vsock_virtio_transport", "vsock"),
    ("CONFIG_SERIO_I8042", "i8042", "SendCtrlAltDel (the stop phase)"),
    ("CONFIG_KEYBOARD_ATKBD", "atkbd", "SendCtrlAltDel (the stop phase)"),
]
deps, files = {}, {}
for line in open(os.path.join(moddir, "modules.dep")):
    path, _, rest = line.partition(":")
    name = re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path)).replace("-", "_")
    files[name] = path
    deps[name] = [
        re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(d)).replace("-", "_") for d in rest.split()
    ]

order = []
def visit(name):
    if name not in order:
        for dep in deps[name]:
            visit(dep)
        order.append(name)

for symbol, module, what in needed:
    value = config.get(symbol)
    if value == "y":
        print(f"{symbol}=y: built in, for {what}")
    elif value == "m":
        if module not in files:
            fail(f"{symbol}=m but modules.dep has no {module}")
        print(f"{symbol}=m: module {module}, for {what}")
        visit(module)
    else:
        fail(f"{symbol} is not set: the guest needs it for {what}")

os.makedirs(target)
for name in order:
    path = os.path.join(moddir, files[name])
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        data = subprocess.run(["zstd", "-dcq", path], check=True, capture_output=True).stdout
    with open(os.path.join(target, name + ".ko"), "wb") as out:
        out.write(data)
with open(os.path.join(target, "order"), "w") as out:
    out.writelines(f"{name}.ko\n" for name in order)
print("initramfs modules, in load order:", " ".join(order) or "none")
PY

# A tree with static busybox and its applet links (our own init stays where it is put).
busybox_tree() {
  mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys}
  cp /bin/busybox "$1/bin/busybox"
  local applet
  /bin/busybox --list-full | while read -r applet; do
    [ -e "$1/$applet" ] || ln -s /bin/busybox "$1/$applet"
  done
  mknod -m 600 "$1/dev/console" c 5 1
  mknod -m 666 "$1/dev/null" c 1 3
}

# initrd.cpio
cp "$guest/initramfs-init" "$work/initrd/init"
chmod 0755 "$work/initrd/init"
mkdir -p "$work/initrd/newroot"
busybox_tree "$work/initrd"
(cd "$work/initrd" && find . | sort | /bin/busybox cpio -o -H newc >"$work/initrd.cpio" 2>/dev/null)

# rootfs.ext4
root=$work/rootfs
mkdir -p "$root"/{etc,root,tmp,run,usr/local/bin,sbin}
install -m 0755 "$guest/init" "$root/sbin/init"
busybox_tree "$root"
gcc -static -O2 -Wall -Wextra -Werror -o "$root/usr/local/bin/sandbox-guest" "$guest/listener.c"
strip "$root/usr/local/bin/sandbox-guest"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'sandbox-guest' >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
chmod 1777 "$root/tmp"
truncate -s 32M "$work/rootfs.ext4"
mkfs.ext4 -q -F -L sandbox-guest -O ^has_journal -d "$root" "$work/rootfs.ext4"

# target.yaml
firecracker=${FIRECRACKER:-$(command -v firecracker || echo /usr/local/bin/firecracker)}
python3 - "$work/target.yaml" "$firecracker" "$out" "$pkg $version" <<'PY'
import json, sys

target, binary, out, kernel = sys.argv[1:]
paths = {"binary": binary, "kernel": f"{out}/vmlinux", "initrd": f"{out}/initrd.cpio",
         "rootfs": f"{out}/rootfs.ext4"}
with open(target, "w") as f:
    f.write(f"# scripts/build-firecracker-guest.sh ({kernel}): an entry for `targets:`\n")
    f.write("- name: firecracker\n  backend: firecracker\n  firecracker:\n")
    for key, value in paths.items():
        f.write(f"    {key}: {json.dumps(value)}\n")
    f.write("    guest_port: 52\n")
PY

for made in vmlinux initrd.cpio rootfs.ext4 target.yaml; do
  mv -f "$work/$made" "$out/$made"
done
say "made, with $pkg $version:"
ls -l "$out/vmlinux" "$out/initrd.cpio" "$out/rootfs.ext4" "$out/target.yaml"
