#!/usr/bin/env bash
# Build the images the tests run, from Debian packages, in the engine at $DOCKER_HOST.
#
#   scripts/build-test-images.sh busybox consul base nginx    # any of them, in this order
#
# No image registry is needed: each image is made from Debian packages and imported.
# An image already in the engine is kept (its tag names what it is made of), so a
# second run costs nothing. Prints "<name> <tag> <seconds>" for each image.
#
#   busybox  genisys-test/busybox:1.35      busybox-static, every applet linked (~1 s)
#   consul   genisys-test/consul:1.8.7      busybox plus the Consul binary of .tools/bin
#                                           and its libraries, started like
#                                           hashicorp/consul's image
#   base     genisys-test/python:bookworm   debootstrap minbase with Python 3.11 and a
#                                           virtual environment first on PATH, like
#                                           python:3.11-slim (~1 min)
#   nginx    genisys-test/nginx:bookworm    base plus Debian's nginx-light and wget
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

busybox_rootfs() {  # $1: directory to fill with busybox and its applets
  if dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    mkdir -p "$1/bin" && cp /bin/busybox "$1/bin/busybox"  # installed by install-docker.sh
  else
    (cd "$work" && apt-get -o APT::Sandbox::User=root download -qq busybox-static)
    dpkg-deb -x "$work"/busybox-static_*.deb "$1"
  fi
  local applet
  for applet in $("$1/bin/busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
  mkdir -p "$1/tmp" "$1/etc"
  chmod 1777 "$1/tmp"
  echo "root:x:0:0:root:/root:/bin/sh" >"$1/etc/passwd"
  echo "root:x:0:" >"$1/etc/group"
}

build_busybox() {
  busybox_rootfs "$work/busybox"
  tar -C "$work/busybox" -c . | docker import - "$1" >/dev/null
}

build_consul() {
  local consul="$root/.tools/bin/consul"
  [ -x "$consul" ] || "$root/scripts/install-consul.sh" >&2
  busybox_rootfs "$work/consul"
  install -m 0755 "$consul" "$work/consul/bin/consul"
  # Debian's consul is linked against glibc: the host's libraries go with it.
  local library
  for library in $(ldd "$consul" | grep -o '/[^ ]*'); do
    cp --parents -L "$library" "$work/consul"
  done
  mkdir -p "$work/consul/consul/data" "$work/consul/consul/config"
  # As hashicorp/consul's entrypoint: `agent ...` gets the image's data and config dirs.
  cat >"$work/consul/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
if [ "$1" = agent ]; then
  shift
  set -- agent -data-dir=/consul/data -config-dir=/consul/config "$@"
fi
exec consul "$@"
SH
  chmod 0755 "$work/consul/bin/docker-entrypoint.sh"
  tar -C "$work/consul" -c . | docker import \
    --change 'ENTRYPOINT ["/bin/docker-entrypoint.sh"]' \
    --change 'CMD ["agent", "-dev", "-client", "0.0.0.0"]' \
    --change 'EXPOSE 8500' - "$1" >/dev/null
}

build_base() {
  debootstrap --variant=minbase --include=python3,python3-venv bookworm \
    "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  # `python` and `pip` on PATH as in python:3.11-slim (Debian's own Python refuses pip).
  chroot "$work/base" python3 -m venv /opt/python
  rm -rf "$work/base/var/cache/apt/archives"/*.deb "$work/base/var/lib/apt/lists"/*
  tar -C "$work/base" -c . | docker import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$1" >/dev/null
}

build_nginx() {
  has_image "$(tag base)" || build_base "$(tag base)"
  cat >"$work/Dockerfile" <<DOCKERFILE
FROM $(tag base)
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y \
      --no-install-recommends nginx-light wget >/dev/null \
    && rm -rf /var/lib/apt/lists/*
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
  # The engine may have no bridge: the build reaches the Debian mirror through the host.
  docker build -q --network host -t "$1" "$work" >/dev/null
}

tag() {
  case "$1" in
    busybox) echo genisys-test/busybox:1.35 ;;
    consul) echo genisys-test/consul:1.8.7 ;;
    base) echo genisys-test/python:bookworm ;;
    nginx) echo genisys-test/nginx:bookworm ;;
    *) echo "build-test-images: unknown image '$1' (busybox, consul, base, nginx)" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  image=$(tag "$name")
  start=$(date +%s.%N)
  has_image "$image" || "build_$name" "$image"
  awk -v s="$start" -v e="$(date +%s.%N)" -v n="$name" -v i="$image" \
    'BEGIN { printf "%s %s %.1f\n", n, i, e - s }'
done
