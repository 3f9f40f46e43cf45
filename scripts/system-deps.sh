#!/usr/bin/env bash
# Debian packages the test suite needs besides Python: Chromium for the browser tests, nginx for
# the deployment test (tests/test_deploy_nginx.py runs its own throwaway nginx on loopback ports),
# PostgreSQL for the scaled-out store.
# Installs them with apt-get when missing (as root, as on CI); otherwise says what to install.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Debian's `nginx` package: /usr/sbin/nginx with the ssl and proxy modules built in.
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# PostgreSQL's server for the scaled-out store's tests (tests/pg_server.py runs a throwaway
# cluster as the `postgres` user; the package's own cluster is never started).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Installing nginx would start Debian's default site on port 80 (and fail to configure if
    # that port is taken). The tests need no system nginx: services may not start during this
    # install (policy-rc.d, when the machine has none of its own), and nginx is not enabled.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    if [[ " ${missing[*]} " == *" nginx "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
else
    echo "The browser and deployment tests need: ${missing[*]} (sudo apt-get install ${missing[*]}); they are skipped until then." >&2
fi
