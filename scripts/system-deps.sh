#!/usr/bin/env bash
# Debian packages the test suite needs besides Python: Chromium for the browser tests.
# Installs them with apt-get when missing (as root, as on CI); otherwise says what to install.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    echo "The browser tests need: ${missing[*]} (sudo apt-get install ${missing[*]}); they are skipped until then." >&2
fi
