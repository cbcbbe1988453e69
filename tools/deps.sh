#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages edgellm's build and tests need — only those missing —
# with sudo when not root. `--aarch64` adds the cross compiler, qemu and the arm64 libraries
# that `make test-aarch64` uses.
set -euo pipefail

pkgs=(build-essential pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev libsqlite3-dev check
      libpcre2-dev libcurl4-openssl-dev curl python3
      clang libclang-rt-dev    # clang: `make fuzz` (libFuzzer)
      systemd                  # systemd-analyze: the unit files' verification and security score
      valgrind wrk)            # `make valgrind`; the load tests' HTTP benchmark
# The integration tests drive the daemon with the official `openai` npm package. Node may come
# from elsewhere (NodeSource bundles npm and conflicts with Debian's npm), so Debian's packages
# are requested only when the commands are missing.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
if [ "${1:-}" = --aarch64 ]; then
  pkgs+=(gcc-aarch64-linux-gnu qemu-user-static libc6-dev-arm64-cross
         libpcre2-dev:arm64 check:arm64 libsubunit-dev:arm64 libcjson-dev:arm64)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing: ${missing[*]}"
if [ "${1:-}" = --aarch64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
