#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: the package with its test extras, and the
# real peers the tests talk to (socat for serial links that can be unplugged; OpenLDAP's slapd and
# ldap-utils for the LDAP store; Debian's chromium for the branch web's browser tests, driven by
# playwright without any browser download, and a Chinese font so its screenshots are legible; PostgreSQL's
# server binaries, initdb and pg_ctl, for the centre's throwaway cluster in tests/postgres.py, whose
# own service is never used).  python-ldap has no wheel, so its build needs build-essential,
# python3-dev and the libldap/libsasl headers.  apt-get runs only as root and only for what is
# missing, and `apt-get update` only when something is.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(socat slapd ldap-utils libldap2-dev libsasl2-dev build-essential python3-dev gammu chromium chromium-driver fonts-wqy-zenhei postgresql)

installed() {
    if command -v dpkg-query >/dev/null; then
        dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
        return
    fi
    case "$1" in  # not Debian: look for what each package provides
        socat) command -v socat >/dev/null ;;
        gammu) command -v gammu >/dev/null ;;  # an independent AT client for the GSM modem emulator
        chromium) command -v chromium >/dev/null || [ -x /usr/lib/chromium/chromium ] ;;  # the web's browser tests
        chromium-driver) command -v chromedriver >/dev/null ;;
        fonts-wqy-zenhei) fc-list 2>/dev/null | grep -qi "wenquanyi" ;;  # Chinese in the screenshots
        slapd) command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] ;;
        postgresql) command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ;;
        ldap-utils) command -v ldapadd >/dev/null ;;
        libldap2-dev) [ -f /usr/include/ldap.h ] ;;
        libsasl2-dev) [ -f /usr/include/sasl/sasl.h ] ;;
        build-essential) command -v cc >/dev/null && command -v make >/dev/null ;;
        python3-dev) python -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ;;
    esac
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        # slapd asks debconf questions; its own config and service are never used (tests/slapd.py)
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "tests/install.sh: please install: ${missing[*]}" >&2
        exit 1
    fi
fi
python -m pip install -q -e '.[test]'
