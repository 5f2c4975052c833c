#!/bin/sh
# Make the base image of the test services, ${BASE_IMAGE:-debian:bookworm-slim}, on an
# engine that cannot pull it. Does nothing when the engine has the image. Where the
# registry's name resolves, it pulls; elsewhere (no registry reachable, as on this
# project's machines and CI) it builds the image from Debian's archive:
# debootstrap --variant=minbase, then docker import.
#
# The mirror is the one the host's apt uses (so it is reachable from here, and from a
# container with host networking); GAIA_DEBIAN_MIRROR and GAIA_DEBIAN_SECURITY_MIRROR
# override it. The image's apt gets the same sources and the host's Acquire settings
# (proxy, Check-Valid-Until for snapshot mirrors), and CA certificates when a mirror
# is https, so `apt-get install` works in `docker build --network host`.
# Needs root, debootstrap and a docker client (DOCKER_HOST names the engine).
set -eu

IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
SUITE=bookworm

say() { echo "base-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE is present"
    exit 0
fi

if [ "$IMAGE" != "debian:$SUITE-slim" ]; then
    say "$IMAGE is missing and only debian:$SUITE-slim can be made here; pull or build it yourself"
    exit 1
fi

if getent hosts registry-1.docker.io >/dev/null 2>&1; then
    say "pulling $IMAGE"
    exec docker pull -q "$IMAGE"
fi

# -- where the host's apt gets Debian from ------------------------------------------------
host_site() {
    # the SITE of the host's apt source for suite $1, if it has one
    apt-get indextargets --format '$(SITE) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
        awk -v suite="$1" '$2 == suite { print $1; exit }'
}
MIRROR=${GAIA_DEBIAN_MIRROR:-$(host_site "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${GAIA_DEBIAN_SECURITY_MIRROR:-$(host_site "$SUITE-security")}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is missing (run integration/docker/install-engine.sh)"; exit 1; }
[ "$(id -u)" -eq 0 ] || { say "debootstrap needs root"; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/gaia-base-image.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

include=""
case "$MIRROR $SECURITY" in
    *https:*) include="--include=ca-certificates" ;;
esac

say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
started=$(date +%s)
# shellcheck disable=SC2086
debootstrap --variant=minbase $include "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 20 "$ROOTFS.log" >&2
    rm -f "$ROOTFS.log"
    exit 1
}
rm -f "$ROOTFS.log"

# the sources of debian:bookworm-slim, on the host's mirrors
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# the host's own Acquire settings: proxies, and no Valid-Until check where it has none
apt-config dump 2>/dev/null |
    grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|https?::proxy) ' \
    >"$ROOTFS/etc/apt/apt.conf.d/90gaia-host-mirror" || true
# what makes the official image slim: no docs, man pages or translations, apt cleans up
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::Languages "none";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log

say "importing $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . |
    docker import --change 'CMD ["bash"]' --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$IMAGE" >/dev/null
say "made $IMAGE in $(($(date +%s) - started)) s"
