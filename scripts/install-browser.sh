#!/usr/bin/env bash
# Installs the browser the demo's browser test drives: Debian's chromium.
#
# Idempotent: does nothing when /usr/bin/chromium is already there. Uses
# apt-get only (never `playwright install`, which downloads its own browser
# build from a CDN). Needs root (CI runs as root); as another user it says
# what to run and exits 0, so the browser test then skips with that reason.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM already present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown')); nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: $CHROMIUM is missing and this is not root; run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends chromium" >&2
    echo "install-browser: the browser test will be skipped until chromium is installed" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: $CHROMIUM is missing and apt-get is not available (not Debian/Ubuntu); install chromium by hand" >&2
    exit 1
fi

echo "install-browser: $CHROMIUM missing; running apt-get update"
export DEBIAN_FRONTEND=noninteractive
apt-get update
echo "install-browser: apt-get install -y --no-install-recommends chromium"
apt-get install -y --no-install-recommends chromium
echo "install-browser: installed $("$CHROMIUM" --version)"
