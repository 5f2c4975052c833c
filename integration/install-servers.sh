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
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
# the packages' own services are not wanted: the tests start their own on free ports
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx ssh >/dev/null 2>&1 || true
fi
