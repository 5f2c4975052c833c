#!/bin/sh
# Install the native servers the remote suite starts when it does not use Docker:
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
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $missing
