#!/usr/bin/env bash
# Debian packages the test suite needs besides Python: Chromium for the browser tests, nginx for
# the deployment test (tests/test_deploy_nginx.py runs its own throwaway nginx on loopback ports),
# PostgreSQL for the scaled-out store, redis-server for the Redis broker (their tests run
# throwaway servers of their own: tests/pg_server.py, tests/redis_server.py).
# Installs them with apt-get when missing (as root, as on CI); otherwise says what to install.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Debian's `nginx` package: /usr/sbin/nginx with the ssl and proxy modules built in.
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# PostgreSQL's server for the scaled-out store's tests (tests/pg_server.py runs a throwaway
# cluster as the `postgres` user; the package's own cluster is never started).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Installing nginx would start Debian's default site on port 80 (and fail to configure if
    # that port is taken), redis-server a system redis on 6379. The tests need neither: services
    # may not start during this install (policy-rc.d, when the machine has none of its own), and
    # neither is enabled.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    for service in nginx redis-server; do
        if [[ " ${missing[*]} " == *" $service "* ]] && [ -d /run/systemd/system ]; then
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
    done
else
    echo "The browser, deployment and Redis broker tests need: ${missing[*]} (sudo apt-get install ${missing[*]}); they are skipped until then." >&2
fi
