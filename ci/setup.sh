#!/usr/bin/env bash
# Install what hvlab needs on Debian 12 (packages + the Python package in .venv).
# Idempotent: when everything is present it only checks, in about a second.
# Used by a new user, by CI (.ci/run -> ci/test.sh) and by the README's commands.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
  # sources, patches, checkpatch; the per-patch checks (sparse, codespell's dictionary)
  git perl xz-utils sparse codespell
  # kernel build
  gcc make flex bison bc libelf-dev libssl-dev cpio ccache kmod
  # the other arches and toolchains (hvlab/build/arches.py): arm64's cross gcc,
  # clang with LLVM's linker and tools (i386 builds with the x86_64 gcc)
  gcc-aarch64-linux-gnu clang lld llvm
  # kselftest collections (their install rule copies with rsync)
  rsync
  # test hosts: QEMU guests, SSH, guest image, kexec
  qemu-system-x86 ipxe-qemu openssh-server openssh-client busybox-static kexec-tools
  iproute2 iperf3 procps
  # arm64 guests: their QEMU; their binaries come from Debian's arm64 packages,
  # fetched by apt with a private state (hvlab/boot/debroot.py)
  qemu-system-arm binutils dpkg
  # installed VMs: the Debian disk image (no loop devices or mounts) and UEFI
  mmdebstrap e2fsprogs dosfstools mtools gdisk qemu-utils ovmf
  # offline kernel tree and a prebuilt guest kernel
  linux-source-6.1 linux-image-amd64
  # Python
  python3 python3-venv
  # the report.html rendering test (headless)
  chromium
)

# --python-only: what a CI job that only reads configs or reports needs
# (ci.matrix, report.merge): Python and git, not the kernel toolchain or QEMU.
MODE=full
if [ "${1:-}" = "--python-only" ]; then
  MODE=python
  PACKAGES=(git python3 python3-venv)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
# The tests' CI tools (ci/node: gitlab-ci-local, npm-groovy-lint, which needs
# Java 17+): Debian's node, npm and Java only when there are none, so a node
# already installed is kept.
if [ "$MODE" = full ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v java >/dev/null || missing+=(default-jre-headless)
fi
if ((${#missing[@]})); then
  echo "ci/setup.sh: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "ci/setup.sh: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.hvlab-installed
target='.[test]'
if [ "$MODE" = python ]; then
  stamp=.venv/.hvlab-installed-runtime
  target='.'
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "ci/setup.sh: installing hvlab${target#.} into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$target"
  touch "$stamp"
fi

# ci/node's tools at the versions of its package-lock.json (npm ci), once per lockfile
if [ "$MODE" = full ]; then
  lock="$(sha256sum ci/node/package-lock.json | cut -d' ' -f1)"
  if [ "$(cat ci/node/node_modules/.hvlab-installed 2>/dev/null)" != "$lock" ]; then
    echo "ci/setup.sh: installing ci/node's tools (npm ci)"
    (cd ci/node && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock" > ci/node/node_modules/.hvlab-installed
  fi
fi
