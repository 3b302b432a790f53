#!/usr/bin/env bash
# The system packages the test suite needs: redis-server and PostgreSQL (servers the governance
# tests start) and Chromium at /usr/bin/chromium (the browser tests/test_dashboard_ui.py drives
# through Playwright, so no `playwright install` download). Installs them with apt-get when they
# are missing (as root, or through sudo); does nothing when they are present. Called by
# `make test` and `.ci/run`.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: please install ${need[*]} (no apt-get here); the governance and dashboard tests use them" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "system-deps: need root to apt-get install ${need[*]}; install them and run again" >&2
        exit 1
    fi
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
