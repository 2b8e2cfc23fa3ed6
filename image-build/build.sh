#!/usr/bin/env bash
# Builds the PXE ramdisk (`make ramdisk`) into build/ramdisk/: vmlinuz, vmlinux, initramfs.img,
# boot.ipxe, manifest.json. Everything in the image comes from Debian's packages (downloaded,
# never installed), this repository, the machine's node binary and the operator's files; what
# goes in, every variable and every kernel argument are in image-build/README.md.
set -euo pipefail
shopt -s nullglob
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

started_ns=$(date +%s%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

OUT=${RAMDISK_DIR:-$REPO/build/ramdisk}
CACHE=${RAMDISK_CACHE:-$REPO/build/cache}
WORK=$OUT.work
COMP=${COMP:-zstd}
NODE_BIN=${NODE_BIN:-$(command -v node || true)}
KERNEL_PACKAGE=${KERNEL_PACKAGE:-}
CONSOLE=${CONSOLE:-console=tty0 console=ttyS0,115200n8}
IPXE_NETDEV=${IPXE_NETDEV:-net0}
BASE_URL=${BASE_URL:-}
CONDUCTOR_URL=${CONDUCTOR_URL:-}
CONDUCTOR_CA=${CONDUCTOR_CA:-}
BFB_URL=${BFB_URL:-}
BFB_CHECKSUM=${BFB_CHECKSUM:-}
INSPECT=${INSPECT:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
EXTRA_MODULES=${EXTRA_MODULES:-}
CA_BUNDLE=${CA_BUNDLE:-}
OVERLAY=${OVERLAY:-}
RSHIM_DEB=${RSHIM_DEB:-}
MFT_TGZ=${MFT_TGZ:-}
PYTHON=${PYTHON:-auto}
APT_UPDATE=${APT_UPDATE:-0}
SIZE_TARGET=$((50 * 1000 * 1000))

say() { printf 'ramdisk: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# ------------------------------------------------------------------------------------ checks
[[ $(id -u) == 0 ]] || die "run as root (apt-get download, device nodes in the image, files owned by root)"
[[ -n $NODE_BIN && -x $NODE_BIN ]] || die "no node binary (NODE_BIN=$NODE_BIN)"
case $COMP in lz4 | zstd | gzip | xz | none) ;; *) die "COMP=$COMP: expected lz4, zstd, gzip, xz or none" ;; esac
case $PYTHON in auto | 0 | 1) ;; *) die "PYTHON=$PYTHON: expected auto, 0 or 1" ;; esac
for file in "$CA_BUNDLE" "$RSHIM_DEB" "$MFT_TGZ"; do
  [[ -z $file || -r $file ]] || die "$file is not a readable file"
done
[[ -z $OVERLAY || -d $OVERLAY ]] || die "OVERLAY=$OVERLAY is not a directory"
if [[ -n $CA_BUNDLE ]] && ! grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_BUNDLE"; then
  die "CA_BUNDLE=$CA_BUNDLE holds no PEM certificate"
fi
ESBUILD=$REPO/node_modules/.bin/esbuild
[[ -x $ESBUILD ]] || die "esbuild is missing: run npm ci (make ramdisk does)"

# The build's own tools; the image takes nothing from the host but its node binary.
declare -A host_tools=([cpio]=cpio [lz4]=lz4 [zstd]=zstd [xz]=xz-utils [gzip]=gzip [depmod]=kmod
  [modprobe]=kmod [readelf]=binutils [strip]=binutils [flock]=util-linux [dpkg-deb]=dpkg [apt-get]=apt)
missing=()
for tool in "${!host_tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${host_tools[$tool]}")
done
if ((${#missing[@]})); then
  say "installing the build's tools: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=900 $(printf '%s\n' "${missing[@]}" | sort -u) >&2
fi

# Fixed times and order make the same inputs give the same bytes.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

# ------------------------------------------------------------------------------------ packages
APT_OPTS=(-o APT::Sandbox::User=root -o DPkg::Lock::Timeout=900 -q)
if [[ $APT_UPDATE == 1 ]] || ! apt-cache show --no-all-versions busybox-static >/dev/null 2>&1; then
  say "apt-get update"
  apt-get "${APT_OPTS[@]}" update >&2
fi

if [[ -z $KERNEL_PACKAGE ]]; then
  KERNEL_PACKAGE=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
  [[ -n $KERNEL_PACKAGE ]] || die "cannot tell which kernel linux-image-amd64 stands for"
fi

mkdir -p "$CACHE/debs"
# One build at a time per cache: a second one (a test starting its own) waits for the first.
exec 9>"$CACHE/.lock"
flock 9
rm -rf "$WORK"
mkdir -p "$WORK"
: >"$WORK/lib-users.tsv"

# The NVIDIA packages' own files are unpacked first: their libraries' packages join the roots.
nvidia_roots=()
RSHIM_VERSION= MFT_VERSION=
if [[ -n $RSHIM_DEB ]]; then
  RSHIM_VERSION=$(dpkg-deb -f "$RSHIM_DEB" Version)
  mkdir -p "$WORK/nvidia/rshim"
  dpkg-deb -x "$RSHIM_DEB" "$WORK/nvidia/rshim"
  nvidia_roots+=($(dpkg-deb -f "$RSHIM_DEB" Depends | tr ',|' '\n\n' | awk '{ print $1 }'))
fi
mft_debs=()
if [[ -n $MFT_TGZ ]]; then
  mkdir -p "$WORK/nvidia/mft.tgz" "$WORK/nvidia/mft"
  tar -xzf "$MFT_TGZ" -C "$WORK/nvidia/mft.tgz"
  # The kernel-mft-dkms package would need a compiler and headers; the tools work on PCI addresses
  # without its modules.
  for deb in $(find "$WORK/nvidia/mft.tgz" -name '*.deb' ! -name '*dkms*' | sort); do
    mft_debs+=("$deb")
    dpkg-deb -x "$deb" "$WORK/nvidia/mft"
    nvidia_roots+=($(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | awk '{ print $1 }'))
  done
  ((${#mft_debs[@]})) || die "MFT_TGZ=$MFT_TGZ holds no .deb (expected NVIDIA's mft-*-deb.tgz)"
  for deb in "${mft_debs[@]}"; do
    [[ $(dpkg-deb -f "$deb" Package) == mft ]] && MFT_VERSION=$(dpkg-deb -f "$deb" Version)
  done
  [[ -n $MFT_VERSION ]] || MFT_VERSION=$(dpkg-deb -f "${mft_debs[0]}" Version)
fi
# NVIDIA's python tools (mlxprivhost, mstprivhost) need python3; with MFT it comes along by default.
if [[ $PYTHON == auto ]]; then
  if [[ -n $MFT_TGZ ]]; then PYTHON=1; else PYTHON=0; fi
fi

mapfile -t tool_lines < <(grep -v '^\s*\(#\|$\)' "$HERE/tools.list")
roots=(busybox-static libc6 libstdc++6 libgcc-s1)
for line in "${tool_lines[@]}"; do
  read -r _ package _ <<<"$line"
  roots+=("$package")
done
((PYTHON)) && roots+=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib)
for package in "${nvidia_roots[@]}"; do
  # Only what Debian has: an NVIDIA package may depend on another of NVIDIA's.
  if apt-cache show --no-all-versions "$package" >/dev/null 2>&1; then roots+=("$package"); else
    say "warning: $package (wanted by an NVIDIA package) is not a Debian package; skipped"
  fi
done

# The roots and the shared-library packages they depend on, transitively. Only libraries are
# followed: the programs' other dependencies (adduser, perl, python3 for mstflint's scripts,
# debconf) are not needed to run the binaries. The first alternative of an "a | b" is taken.
dependencies() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" 2>/dev/null | awk '
    /^[^ ]/ { group = 0; next }
    /^ *\|?(Pre)?Depends:/ {
      alt = ($0 ~ /^ *\|/); name = $2; sub(/:any$/, "", name)
      if (group) { if (!alt) group = 0; next }
      if (alt) group = 1
      if (name !~ /^</) print name
    }'
}
declare -A picked=()
frontier=()
for package in "${roots[@]}"; do
  [[ -n ${picked[$package]:-} ]] && continue
  picked[$package]=1
  frontier+=("$package")
done
while ((${#frontier[@]})); do
  next=()
  while read -r dep; do
    [[ -n ${picked[$dep]:-} ]] && continue
    [[ $dep =~ ^lib|^zlib1g$ ]] || continue
    [[ $dep =~ -(dev|doc|bin|common|data|utils|tools|modules|runtime)$ ]] && continue
    picked[$dep]=1
    next+=("$dep")
  done < <(dependencies "${frontier[@]}" | sort -u)
  frontier=("${next[@]}")
done
mapfile -t packages < <(printf '%s\n' "${!picked[@]}" | sort)

# name version arch, for the packages and the kernel.
apt-cache show --no-all-versions "${packages[@]}" "$KERNEL_PACKAGE" | awk '
  /^Package:/ { p = $2 } /^Version:/ { v = $2 } /^Architecture:/ { a = $2 }
  /^$/ { if (p != "") print p, v, a; p = "" }
  END { if (p != "") print p, v, a }' | sort -u -k1,1 >"$WORK/packages.txt"
declare -A VERSION=() DEBFILE=()
while read -r name version arch; do
  VERSION[$name]=$version
  # The name apt-get download gives the file (an epoch's colon escaped).
  DEBFILE[$name]=${name}_${version//:/%3a}_$arch.deb
done <"$WORK/packages.txt"
for package in "${packages[@]}" "$KERNEL_PACKAGE"; do
  [[ -n ${DEBFILE[$package]:-} ]] || die "apt knows no package $package (apt-get update, or APT_UPDATE=1)"
done

fetch=()
for package in "${packages[@]}" "$KERNEL_PACKAGE"; do
  [[ -f $CACHE/debs/${DEBFILE[$package]} ]] || fetch+=("$package=${VERSION[$package]}")
done
if ((${#fetch[@]})); then
  say "downloading ${#fetch[@]} Debian packages"
  (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download "${fetch[@]}" >&2)
fi

# One merged tree of every package but the kernel, kept while the package set is the same.
# /bin, /sbin and /lib lead into /usr as on an installed Debian 12, so each path has one name.
merged_layout() {
  mkdir -p "$1/usr/bin" "$1/usr/sbin" "$1/usr/lib" "$1/usr/lib64"
  ln -sfn usr/bin "$1/bin"
  ln -sfn usr/sbin "$1/sbin"
  ln -sfn usr/lib "$1/lib"
  ln -sfn usr/lib64 "$1/lib64"
}
sysroot_key=$(for package in "${packages[@]}"; do printf '%s %s\n' "$package" "${VERSION[$package]}"; done |
  sha256sum | cut -c1-16)
SYS=$CACHE/sysroot/$sysroot_key
if [[ ! -f $SYS/.complete ]]; then
  say "unpacking ${#packages[@]} packages"
  rm -rf "$CACHE/sysroot"
  mkdir -p "$SYS/.lists"
  merged_layout "$SYS"
  for package in "${packages[@]}"; do
    deb=$CACHE/debs/${DEBFILE[$package]}
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$SYS"
    # Which package each path came from, for the manifest.
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's#^\./#/#' -e 's#/$##' \
      -e 's#^/bin/#/usr/bin/#' -e 's#^/sbin/#/usr/sbin/#' -e 's#^/lib/#/usr/lib/#' -e 's#^/lib64/#/usr/lib64/#' \
      >"$SYS/.lists/$package"
  done
  touch "$SYS/.complete"
fi

# The kernel, unpacked once per version, with the module index its package makes at install time.
KDIR=$CACHE/kernel/$KERNEL_PACKAGE-${VERSION[$KERNEL_PACKAGE]}
if [[ ! -f $KDIR/.complete ]]; then
  say "unpacking $KERNEL_PACKAGE ${VERSION[$KERNEL_PACKAGE]}"
  rm -rf "$CACHE/kernel"
  merged_layout "$KDIR"
  dpkg-deb --fsys-tarfile "$CACHE/debs/${DEBFILE[$KERNEL_PACKAGE]}" | tar -x --keep-directory-symlink -C "$KDIR"
  krel=$(basename "$(ls -d "$KDIR"/lib/modules/*/ | head -n 1)")
  depmod -b "$KDIR" "$krel"
  touch "$KDIR/.complete"
fi
KREL=$(basename "$(ls -d "$KDIR"/lib/modules/*/ | head -n 1)")

# ------------------------------------------------------------------------------------ the tree
ROOT=$WORK/root
merged_layout "$ROOT"
mkdir -p "$ROOT"/{dev,proc,sys,run,tmp,root,mnt,etc/bm-agent,var/log,var/tmp}
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
chmod 700 "$ROOT/root"
ln -s /run "$ROOT/var/run"
# The kernel opens /dev/console before /init runs and before devtmpfs is mounted.
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

declare -A placed=()
: >"$WORK/contents.tsv"
record() { # group path
  [[ -n ${placed[$2]:-} ]] && return 0
  placed[$2]=1
  printf '%s\t%s\n' "$1" "$2" >>"$WORK/contents.tsv"
}

canon() { # a path as the merged layout names it
  local p
  p=$(realpath -m -s "$1")
  case $p in
    /bin/*) p=/usr/bin/${p#/bin/} ;;
    /sbin/*) p=/usr/sbin/${p#/sbin/} ;;
    /lib/*) p=/usr/lib/${p#/lib/} ;;
    /lib64/*) p=/usr/lib64/${p#/lib64/} ;;
  esac
  printf '%s' "$p"
}

elf_queue=()
# Copies one path from tree $from (a symbolic link with what it points to) into the image.
put() { # group from path
  local group=$1 from=$2 path
  path=$(canon "$3")
  [[ -n ${placed[$path]:-} ]] && return 0
  local src=$from$path
  if [[ -L $src ]]; then
    local target
    target=$(readlink "$src")
    mkdir -p "$ROOT$(dirname "$path")"
    ln -sfn "$target" "$ROOT$path"
    record "$group" "$path"
    if [[ $target == /* ]]; then put "$group" "$from" "$target"; else put "$group" "$from" "$(dirname "$path")/$target"; fi
  elif [[ -f $src ]]; then
    mkdir -p "$ROOT$(dirname "$path")"
    cp -p "$src" "$ROOT$path"
    record "$group" "$path"
    [[ $(head -c 4 "$src" | tr -d '\0') == $'\x7fELF' ]] && elf_queue+=("$group"$'\t'"$path")
  elif [[ -d $src ]]; then
    local entry
    for entry in "$src"/* "$src"/.[!.]*; do put "$group" "$from" "$path/${entry##*/}"; done
  else
    return 1
  fi
  return 0
}

# The shared libraries of every ELF file placed so far, found in Debian's packages the way the
# dynamic loader would (DT_RUNPATH/RPATH, then the multiarch directories); each is counted in
# the group that needs it, or in "libs" when several groups do. A library found nowhere fails the build unless
# only an NVIDIA file needs it, which is reported instead.
declare -A scanned=()
unresolved=()
resolve_libraries() {
  local item group path needed runpath dir lib found
  while ((${#elf_queue[@]})); do
    item=${elf_queue[0]}
    elf_queue=("${elf_queue[@]:1}")
    group=${item%%$'\t'*}
    path=${item#*$'\t'}
    [[ -n ${scanned[$path]:-} ]] && continue
    scanned[$path]=1
    readelf -d "$ROOT$path" >"$WORK/readelf.txt" 2>/dev/null || continue
    runpath=$(sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p' "$WORK/readelf.txt" | tr ':' ' ')
    runpath=${runpath//\$ORIGIN/$(dirname "$path")}
    for needed in $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' "$WORK/readelf.txt"); do
      found=
      for dir in $runpath /usr/lib/x86_64-linux-gnu /usr/lib /usr/lib64; do
        for tree in "$SYS" "$ROOT"; do
          if [[ -e $tree$dir/$needed ]]; then
            put "$group" "$tree" "$dir/$needed" 2>/dev/null || true
            printf '%s\t%s\n' "$group" "$(canon "$dir/$needed")" >>"$WORK/lib-users.tsv"
            found=1
            break 2
          fi
        done
      done
      [[ -n $found ]] || unresolved+=("$group $path $needed")
    done
  done
}

# busybox first: it is static, and its applets fill only the places no real program took (below).
put busybox "$SYS" /usr/bin/busybox

# node without its symbol tables and debug sections (98 MB -> 86 MB; the code and the dynamic
# symbols that native addons link against stay), and its libraries.
node_sha=$(sha256sum "$NODE_BIN" | cut -c1-64)
NODE_VERSION=$("$NODE_BIN" -v)
[[ $NODE_VERSION == v20.* ]] || say "warning: $NODE_BIN is $NODE_VERSION; the agent is built and tested on Node 20"
if [[ ! -f $CACHE/node/$node_sha-stripped/node ]]; then
  rm -rf "$CACHE/node"
  mkdir -p "$CACHE/node/$node_sha-stripped"
  strip --strip-all -o "$CACHE/node/$node_sha-stripped/node.tmp" "$NODE_BIN"
  mv "$CACHE/node/$node_sha-stripped/node.tmp" "$CACHE/node/$node_sha-stripped/node"
fi
install -m 755 "$CACHE/node/$node_sha-stripped/node" "$ROOT/usr/bin/node"
record node /usr/bin/node
elf_queue+=($'libs\t/usr/bin/node')
put libs "$SYS" /usr/lib64/ld-linux-x86-64.so.2
resolve_libraries
NODE_PACKAGE=$(dpkg -S "$(realpath "$NODE_BIN")" 2>/dev/null | cut -d: -f1 | head -n 1 || true)
NODE_PACKAGE_VERSION=
[[ -n $NODE_PACKAGE ]] && NODE_PACKAGE_VERSION=$(dpkg-query -W -f '${Version}' "$NODE_PACKAGE" 2>/dev/null || true)

# The agent: a CommonJS bundle, its loader, its hash worker and V8's code cache for it, made with
# the node binary the image gets (bundle-agent.sh says how and why).
say "bundling the agent and making its code cache"
BUNDLE=$WORK/bundle
"$HERE/bundle-agent.sh" "$BUNDLE" "$CACHE/node/$node_sha-stripped/node"
CODE_CACHE=0
[[ -f $BUNDLE/agent.cache ]] && CODE_CACHE=1
mkdir -p "$ROOT/usr/lib/bm-agent"
agent_files=(main.js agent.js hash-worker-entry.js package.json)
((CODE_CACHE)) && agent_files+=(agent.cache)
for file in "${agent_files[@]}"; do
  mode=644
  [[ $file == main.js ]] && mode=755
  install -m "$mode" "$BUNDLE/$file" "$ROOT/usr/lib/bm-agent/$file"
  record agent "/usr/lib/bm-agent/$file"
done
ln -s ../lib/bm-agent/main.js "$ROOT/usr/bin/bm-agent"
record agent /usr/bin/bm-agent
AGENT_VERSION=$(sed -n "s/.*AGENT_VERSION *= *'\([^']*\)'.*/\1/p" "$REPO/agent/version.ts" | head -n 1)
[[ -n $AGENT_VERSION ]] || AGENT_VERSION=$("$NODE_BIN" -p "require('$REPO/package.json').version")

# The programs, group by group, then their libraries.
for line in "${tool_lines[@]}"; do
  read -r group package paths <<<"$line"
  for path in $paths; do
    put "$group" "$SYS" "$path" || die "$package has no $path (tools.list)"
  done
  resolve_libraries
done

# Python for NVIDIA's python tools: the interpreter and the standard library without what a
# command-line tool never imports (tests, GUI, installers).
if ((PYTHON)); then
  put python "$SYS" /usr/bin/python3.11
  ln -sfn python3.11 "$ROOT/usr/bin/python3"
  record python /usr/bin/python3
  (cd "$SYS" && find usr/lib/python3.11 \( -name test -o -name tests -o -name idlelib -o -name tkinter \
    -o -name turtledemo -o -name ensurepip -o -name lib2to3 -o -name pydoc_data -o -name distutils \
    -o -name '__pycache__' -o -name 'config-3.11-*' \) -prune -o \( -type f -o -type l \) -print) |
    sort >"$WORK/python.txt"
  while read -r path; do put python "$SYS" "/$path"; done <"$WORK/python.txt"
  for tool in mstprivhost mstfwreset; do put mstflint "$SYS" "/usr/bin/$tool"; done
  put mstflint "$SYS" /usr/lib/x86_64-linux-gnu/mstflint
  resolve_libraries
fi

# ------------------------------------------------------------------------------------ modules
mapfile -t module_lines < <(grep -v '^\s*\(#\|$\)' "$HERE/modules.list")
for extra in ${EXTRA_MODULES//,/ }; do module_lines+=("$extra boot EXTRA_MODULES"); done
kmods=() boot_modules=() missing_modules=()
for line in "${module_lines[@]}"; do
  read -r module when _ <<<"$line"
  if modprobe -d "$KDIR" -S "$KREL" --show-depends "$module" >/dev/null 2>&1; then
    kmods+=("$module")
    [[ $when == boot ]] && boot_modules+=("$module")
  else
    missing_modules+=("$module")
  fi
done
((${#missing_modules[@]})) && say "not in kernel $KREL (skipped): ${missing_modules[*]}"
modprobe -d "$KDIR" -S "$KREL" --show-depends -a "${kmods[@]}" | awk '$1 == "insmod" { print $2 }' | sort -u >"$WORK/modules.txt"
while read -r file; do
  path=${file#"$KDIR"}
  put kernel-modules "$KDIR" "$path"
done <"$WORK/modules.txt"
for file in modules.order modules.builtin modules.builtin.modinfo; do
  put kernel-modules "$KDIR" "/usr/lib/modules/$KREL/$file"
done
depmod -b "$ROOT" "$KREL"
for file in "$ROOT/usr/lib/modules/$KREL"/modules.*; do record kernel-modules "${file#"$ROOT"}"; done
printf '%s\n' "${boot_modules[@]}" >"$ROOT/etc/bm-agent/modules.boot"

# ------------------------------------------------------------------------------------ init, etc
(cd "$HERE/rootfs" && find . \( -type f -o -type l \) -printf '%P\n' | sort) >"$WORK/init-files.txt"
tar -C "$HERE/rootfs" -c . | tar -C "$ROOT" -x --keep-directory-symlink --no-same-owner
chmod 600 "$ROOT/etc/shadow"
while read -r path; do record init "$(canon "/$path")"; done <"$WORK/init-files.txt"
build_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
cat >"$ROOT/etc/bm-agent/release" <<EOF
BMA_AGENT_VERSION=$AGENT_VERSION
BMA_BUILD_DATE=$build_date
BMA_KERNEL=$KREL
BMA_NODE=$NODE_VERSION
EOF
cat >"$ROOT/etc/os-release" <<EOF
NAME="bm-agent ramdisk"
ID=bm-agent-ramdisk
ID_LIKE=debian
VERSION_ID=$AGENT_VERSION
PRETTY_NAME="bm-agent ramdisk $AGENT_VERSION (Debian 12 packages, kernel $KREL)"
EOF
printf 'bm-agent\n' >"$ROOT/etc/hostname"
for path in /etc/bm-agent/release /etc/bm-agent/modules.boot /etc/os-release /etc/hostname; do record init "$path"; done

# Every busybox applet that no real program provides, as a link to busybox. A real program
# anywhere on PATH wins: busybox's ip in /usr/sbin would otherwise shadow iproute2's in /usr/bin.
"$ROOT/usr/bin/busybox" --list-full | sort | while read -r applet; do
  path=$(canon "/$applet")
  name=${path##*/}
  [[ $path == /linuxrc ]] && continue
  [[ -e $ROOT/usr/bin/$name || -L $ROOT/usr/bin/$name || -e $ROOT/usr/sbin/$name || -L $ROOT/usr/sbin/$name ]] && continue
  mkdir -p "$ROOT$(dirname "$path")"
  ln -s /usr/bin/busybox "$ROOT$path"
  printf 'busybox\t%s\n' "$path" >>"$WORK/contents.tsv"
done
# Debian's busybox shell runs its own applet for any name it has (FEATURE_SH_STANDALONE), even
# with the real program on PATH: `ip` at the debug shell would be busybox's. Aliases give login
# shells the real ones; the init scripts name them by path, and the agent execs without a shell.
for name in $("$ROOT/usr/bin/busybox" --list | sort); do
  for dir in /usr/sbin /usr/bin; do
    if [[ -e $ROOT$dir/$name && $(readlink "$ROOT$dir/$name") != /usr/bin/busybox && $name != busybox ]]; then
      printf "alias %s='%s'\n" "$name" "$dir/$name"
      break
    fi
  done
done >"$ROOT/etc/bm-agent/aliases"
record init /etc/bm-agent/aliases

# ------------------------------------------------------------------------------------ NVIDIA
# Their files as packaged (less documentation and service units), with their libraries.
nvidia_put() { # group tree
  local group=$1 tree=$2 path
  (cd "$tree" && find . \( -type f -o -type l \) -printf '/%P\n' | sort) |
    grep -v -E '^/usr/share/(doc|man|info|lintian)/|^/(usr/)?lib/systemd/|^/etc/init\.d/' >"$WORK/$group.txt" || true
  while read -r path; do put "$group" "$tree" "$path"; done <"$WORK/$group.txt"
  resolve_libraries
}
[[ -n $RSHIM_DEB ]] && nvidia_put rshim "$WORK/nvidia/rshim"
[[ -n $MFT_TGZ ]] && nvidia_put mft "$WORK/nvidia/mft"

# Libraries nobody could provide: fatal for Debian's programs, a warning for NVIDIA's.
fatal=0
for entry in "${unresolved[@]}"; do
  read -r group path lib <<<"$entry"
  if [[ $group == rshim || $group == mft ]]; then
    say "warning: $path ($group) needs $lib, which no Debian package taken here provides"
  else
    say "error: $path ($group) needs $lib, found in no package taken (add its package to the roots)"
    fatal=1
  fi
done
((fatal == 0)) || exit 1

# ------------------------------------------------------------------------------------ operator
if [[ -n $CA_BUNDLE ]]; then
  install -m 644 "$CA_BUNDLE" "$ROOT/etc/bm-agent/ca.pem"
  record operator /etc/bm-agent/ca.pem
fi
# The overlays go last, over everything: image-build/overlay/, then OVERLAY.
overlay_files=0
for dir in "$HERE/overlay" ${OVERLAY:+"$OVERLAY"}; do
  (cd "$dir" && find . \( -type f -o -type l \) ! -name .gitkeep -printf '%P\n' | sort) >"$WORK/overlay.txt"
  [[ -s $WORK/overlay.txt ]] || continue
  tar -C "$dir" --exclude=./.gitkeep -c . | tar -C "$ROOT" -x --keep-directory-symlink --no-same-owner
  while read -r path; do
    record overlay "$(canon "/$path")"
    overlay_files=$((overlay_files + 1))
  done <"$WORK/overlay.txt"
done

# ------------------------------------------------------------------------------------ artefacts
STAGE=$WORK/out
mkdir -p "$STAGE"
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
say "archiving and compressing ($COMP)"
(cd "$ROOT" && find . -mindepth 1 -printf '%P\0' | sort -z |
  cpio --null --reproducible --quiet -o -H newc -R 0:0) >"$WORK/initramfs.cpio"
# zstd -19 is what brings the image under 50 MB (for about 165 MB of files: -19 47 MB, -17 49,
# -10 53, lz4 71), at 60-120 s on two cores; the same archive is never compressed twice (kernel
# arguments live in boot.ipxe, so changing them does not change the archive).
# The kernel reads lz4's legacy frame only, and xz's CRC32 check only.
case $COMP in
  lz4) COMP_LEVEL=${COMP_LEVEL:-9} ;;
  zstd) COMP_LEVEL=${COMP_LEVEL:-19} ;;
  gzip) COMP_LEVEL=${COMP_LEVEL:-9} ;;
  xz) COMP_LEVEL=${COMP_LEVEL:-6} ;;
  none) COMP_LEVEL=0 ;;
esac
archive_key=$(sha256sum "$WORK/initramfs.cpio" | cut -c1-64)-$COMP-$COMP_LEVEL
if [[ -f $CACHE/initramfs/$archive_key ]]; then
  say "the archive is unchanged: reusing its compressed copy"
else
  case $COMP in
    lz4) lz4 -l -"$COMP_LEVEL" -q -c "$WORK/initramfs.cpio" ;;
    zstd) zstd -q -T0 -"$COMP_LEVEL" -c "$WORK/initramfs.cpio" ;;
    gzip) gzip -n -"$COMP_LEVEL" -c "$WORK/initramfs.cpio" ;;
    xz) xz -T1 --check=crc32 -"$COMP_LEVEL" -c "$WORK/initramfs.cpio" ;;
    none) cat "$WORK/initramfs.cpio" ;;
  esac >"$WORK/initramfs.compressed"
  mkdir -p "$CACHE/initramfs"
  mv "$WORK/initramfs.compressed" "$CACHE/initramfs/$archive_key"
  # A few are kept: switching COMP back and forth reuses each.
  ls -t "$CACHE/initramfs" | tail -n +5 | sed "s#^#$CACHE/initramfs/#" | xargs -r rm -f
fi
cp "$CACHE/initramfs/$archive_key" "$STAGE/initramfs.img"

cp "$KDIR/boot/vmlinuz-$KREL" "$STAGE/vmlinuz"
# The uncompressed kernel for direct boots: QEMU starts it at its PVH entry, which skips the
# in-guest decompression of the bzImage (about 3 s under TCG). The payload is the first stream
# of a known format inside the bzImage; what follows the stream is not the kernel's, so the
# decompressor's complaint about trailing bytes is expected.
vmlinux_from() { # magic-regex decompress-command
  local offset
  offset=$(grep -obUaP "$1" "$STAGE/vmlinuz" | head -n 1 | cut -d: -f1)
  [[ -n $offset ]] || return 1
  tail -c +"$((offset + 1))" "$STAGE/vmlinuz" | $2 >"$KDIR/vmlinux.tmp" 2>/dev/null || true
  [[ $(head -c 4 "$KDIR/vmlinux.tmp" | tr -d '\0') == $'\x7fELF' ]] && mv "$KDIR/vmlinux.tmp" "$KDIR/vmlinux"
}
if [[ ! -f $KDIR/vmlinux ]]; then
  vmlinux_from '\xfd7zXZ\x00' 'xz -dc' || vmlinux_from '\x28\xb5\x2f\xfd' 'zstd -dc' ||
    vmlinux_from '\x1f\x8b\x08' 'gzip -dc' || die "no vmlinux found inside vmlinuz"
fi
cp "$KDIR/vmlinux" "$STAGE/vmlinux"
readelf -n "$STAGE/vmlinux" 2>/dev/null | grep -q 'Xen.*0x00000012' ||
  say "warning: vmlinux has no PVH entry note; QEMU cannot boot it directly"

# The kernel arguments from the make variables; iPXE fills in the MAC it booted from, written as
# Ironic and pxelinux do (01- then the MAC with dashes).
# Split on blanks only: a '*' or '?' in an argument is not a file pattern.
read -r -a console_args <<<"$CONSOLE"
read -r -a extra_args <<<"$EXTRA_ARGS"
kernel_args=(initrd=initramfs.img "${console_args[@]}")
[[ -n $CONDUCTOR_URL ]] && kernel_args+=("bma-conductor-url=$CONDUCTOR_URL")
[[ -n $CONDUCTOR_CA ]] && kernel_args+=("bma-conductor-ca=$CONDUCTOR_CA")
[[ -n $BFB_URL ]] && kernel_args+=("bma-bfb-url=$BFB_URL")
[[ -n $BFB_CHECKSUM ]] && kernel_args+=("bma-bfb-checksum=$BFB_CHECKSUM")
case ${INSPECT,,} in
  '' | 0 | false | no) ;;
  *) kernel_args+=("bma-inspect=1") ;;
esac
kernel_args+=("BOOTIF=01-\${$IPXE_NETDEV/mac:hexhyp}")
kernel_args+=("${extra_args[@]}")
fetched_from="relative to this script's URL"
[[ -n $BASE_URL ]] && fetched_from="from $BASE_URL/"
cat >"$STAGE/boot.ipxe" <<EOF
#!ipxe
# bm-agent ramdisk $AGENT_VERSION, kernel $KREL, built $build_date.
# vmlinuz and initramfs.img are fetched $fetched_from.
kernel ${BASE_URL:+$BASE_URL/}vmlinuz ${kernel_args[*]}
initrd ${BASE_URL:+$BASE_URL/}initramfs.img
boot
EOF

# ------------------------------------------------------------------------------------ manifest
du_bytes() { stat -c %s "$1"; }
printf '%s\n' "${boot_modules[@]}" >"$WORK/modules.boot"
printf '%s\n' "${kmods[@]}" >"$WORK/modules.wanted"
printf '%s\n' "${missing_modules[@]}" >"$WORK/modules.missing"
printf '%s\n' "${kernel_args[@]}" >"$WORK/kernel-args"
cp "$WORK/contents.tsv" "$WORK/contents.unsorted"
export WORK ROOT SYS STAGE COMP COMP_LEVEL KERNEL_PACKAGE KREL NODE_BIN NODE_VERSION NODE_PACKAGE NODE_PACKAGE_VERSION node_sha \
  AGENT_VERSION CODE_CACHE build_date PYTHON RSHIM_DEB RSHIM_VERSION MFT_TGZ MFT_VERSION CA_BUNDLE overlay_files SIZE_TARGET
KERNEL_VERSION=${VERSION[$KERNEL_PACKAGE]}
GIT_COMMIT=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
GIT_DIRTY=0
[[ -n $GIT_COMMIT && -n $(git -C "$REPO" status --porcelain 2>/dev/null) ]] && GIT_DIRTY=1
export KERNEL_VERSION GIT_COMMIT GIT_DIRTY
"$NODE_BIN" "$HERE/manifest.mjs"

# Replace the previous artefacts only once every new one is complete.
mkdir -p "$OUT"
for file in vmlinuz vmlinux initramfs.img boot.ipxe manifest.json contents.tsv; do
  mv -f "$STAGE/$file" "$OUT/$file"
done
rm -rf "$WORK"

elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
image_bytes=$(du_bytes "$OUT/initramfs.img")
verdict="under"
((image_bytes < SIZE_TARGET)) || verdict="OVER"
say "done in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)) | cut -c1) s: $OUT"
for file in vmlinuz vmlinux initramfs.img boot.ipxe manifest.json; do
  printf '  %-14s %12s bytes\n' "$file" "$(du_bytes "$OUT/$file")" >&2
done
printf '  initramfs (%s) is %s the 50 MB target: %s of %s bytes\n' "$COMP" "$verdict" "$image_bytes" "$SIZE_TARGET" >&2
