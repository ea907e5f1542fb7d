#!/usr/bin/env bash
# Install the Consul binary into .tools/bin (never system-wide).
#
# On Debian or Ubuntu: download Debian's `consul` package (bullseye suite) with apt
# through a temporary source list, and extract the binary. Nothing is installed into
# the system and the machine's apt sources are left as they were.
# Elsewhere: explain the official download.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/bin"
mkdir -p "$dest"

if [ -x "$dest/consul" ]; then
  echo "consul already installed: $dest/consul ($("$dest/consul" version | head -n1))"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<MSG
install-consul: this machine has no apt-get, so Debian's consul package cannot be used.
Download Consul from https://developer.hashicorp.com/consul/install, put the binary at
$dest/consul (or anywhere on PATH, or set GENISYS_CONSUL_BIN), and run again.
MSG
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/etc/preferences.d"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ ! -r "$keyring" ]; then
  echo "install-consul: $keyring is missing; install the debian-archive-keyring package first." >&2
  exit 1
fi
echo "deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main" >"$work/etc/sources.list"

# A private apt configuration: its own source list, lists and cache, so the machine's
# own apt state is not touched.
apt_opts=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list"
  -o "Dir::Etc::SourceParts=$work/etc/none"
  -o "Dir::Etc::Preferences=$work/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::Archives=$work/archives"
  -o "Dir::Cache=$work"
  -o "APT::Architecture=$(dpkg --print-architecture)"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "install-consul: fetching Debian's consul package (bullseye) ..."
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download consul)
deb=$(ls "$work"/consul_*.deb)
dpkg-deb -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/bin/consul" "$dest/consul"
echo "install-consul: installed $dest/consul ($("$dest/consul" version | head -n1))"
