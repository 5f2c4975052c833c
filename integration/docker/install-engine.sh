#!/bin/sh
# Install what the Docker run of the remote suite needs on a Debian host: Debian's
# docker.io (dockerd, containerd, runc) and debootstrap (to make the base image where
# no image registry is reachable). Idempotent: does nothing when both are there.
# It never starts the engine: scripts/test-all.sh starts its own (see dockerd.sh).
set -eu

missing=""
[ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"

if [ -z "$missing" ]; then
    echo "install-engine: dockerd and debootstrap are present"
    exit 0
fi
# shellcheck disable=SC2086
sh "$(dirname "$0")/../apt-install.sh" $missing
