#!/usr/bin/env bash
# Install Debian's chromium (system-wide, as root): tests/test_ui.py runs the status page
# in it, headless, to read the DOM its scripts build and to take a screenshot. Without
# root or apt-get it explains and exits 0: the status page tests then skip (outside CI;
# in CI they fail, naming this script).
#
#   scripts/install-chromium.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ -n "${INSTALL_CHROMIUM_AGAIN:-}" ]; then
  echo "install-chromium: chromium still missing after apt-get install" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: chromium missing; as root on Debian: apt-get install chromium" \
       "(the status page tests run it headless)" >&2
  exit 0
fi

echo "install-chromium: installing chromium ..."
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1  # no service restart prompts
apt-get update -qq
apt-get install -qq -y --no-install-recommends chromium >/dev/null
INSTALL_CHROMIUM_AGAIN=1 exec "$0" "$@"  # checks again
