#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: the package with its test extras, and the
# real peers the tests talk to (socat for serial links that can be unplugged).  apt-get runs only
# as root and only for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v socat >/dev/null || missing+=(socat)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "tests/install.sh: please install: ${missing[*]}" >&2
        exit 1
    fi
fi
python -m pip install -q -e '.[test]'
