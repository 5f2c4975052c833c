#!/bin/sh
# Install Debian packages for the tests, quietly and non-interactively, without letting
# their maintainer scripts start services (nginx, sshd and dockerd would bind ports or
# fail the install; the tests start their own). Usage: apt-install.sh PACKAGE...
# Runs apt-get update once per call, only when something is to be installed.
set -eu

[ "$#" -gt 0 ] || exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "apt-install: installing $*"
# invoke-rc.d asks policy-rc.d whether a service may start; 101 means "no"
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
fi
trap '[ -z "$added_policy" ] || $SUDO rm -f "$policy"' EXIT
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
# where systemd runs, the packages' own units are enabled: the tests want none of them
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in nginx ssh docker containerd; do
        $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
