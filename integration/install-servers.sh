#!/bin/sh
# Install the native servers the remote suite starts when no Docker engine answers:
# nginx (WebDAV: dav_methods is built into Debian's nginx) and OpenSSH's sshd.
# moto's S3 server comes from the Python test dependencies (moto[server]).
# Idempotent: does nothing when the binaries are already there.
set -eu

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing="$missing openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"

if [ -z "$missing" ]; then
    echo "install-servers: nginx and sshd are present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "install-servers: installing$missing"
# keep the packages from starting their own services during the install (they would bind
# ports 80 and 22, and a failed start would fail the install); the tests start their own
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
fi
trap '[ -n "$added_policy" ] && $SUDO rm -f "$policy"' EXIT
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
# the packages' own services are not wanted: the tests start their own on free ports
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx ssh >/dev/null 2>&1 || true
fi
