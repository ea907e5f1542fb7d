#!/usr/bin/env bash
# Install what the Docker tests need, from Debian's packages (system-wide, as root):
#   docker.io       the engine (dockerd 20.10), started privately by the tests (tests/dockerd.py)
#   docker-compose  Compose 1.29, which runs docker-compose.yml in integration/test_compose.py
#   busybox-static  the busybox test image
#   debootstrap     the Debian base with Python of the Genisys test image
# See scripts/build-test-images.sh. Without root or apt-get it explains and exits 0: the
# Docker tests are then skipped (outside CI) or use the engine DOCKER_HOST names.
#
#   scripts/install-docker.sh [STAMP]    # STAMP is touched once everything is installed
set -euo pipefail
stamp=${1:-}

packages=(docker.io docker-compose busybox-static debootstrap)
commands=(dockerd docker-compose busybox debootstrap)

missing=()
for i in "${!packages[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${commands[$i]}" ] \
    || missing+=("${packages[$i]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-docker: $(PATH=$PATH:/usr/sbin dockerd --version)"
  if [ -n "$stamp" ]; then mkdir -p "$(dirname "$stamp")" && touch "$stamp"; fi
  exit 0
fi

if [ -n "${INSTALL_DOCKER_AGAIN:-}" ]; then
  echo "install-docker: ${missing[*]} still missing after apt-get install" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-docker: ${missing[*]} missing; as root on Debian: apt-get install ${missing[*]}" \
       "(the Docker tests need them, or an engine that DOCKER_HOST names)" >&2
  exit 0
fi

echo "install-docker: installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -qq -y "${missing[@]}" >/dev/null
INSTALL_DOCKER_AGAIN=1 exec "$0" "$@"  # checks again, and touches the stamp
