#!/usr/bin/env bash
# The README's test command (CI runs it through .ci/run). It installs everything the tests
# need (servers and docker.io from Debian, packages from PyPI) and runs:
#   1. the offline tests and the plugins' tests (on every core), then the remote suite against the
#      native servers;
#   2. the remote suite again against the Docker services of integration/compose.yaml, on the
#      Docker engine that answers, or else on a private dockerd this script starts (no bridge,
#      no iptables, host networking only) and stops at the end, even on failure.
# Tests marked slow (the long time-bound ones) run in the native pass only.
# Extra arguments go to both pytest runs. GAIA_TEST_DOCKER=0 leaves out the Docker pass,
# saying so. The exit code is non-zero when either pass fails.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== test-all: %s\n' "$*"; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }

started=$(date +%s)
bash integration/install-servers.sh
# the gaia-autotools example builds a real autoconf/automake project (tests/test_example_autotools.py)
command -v autoreconf >/dev/null 2>&1 && command -v automake >/dev/null 2>&1 || \
    sh integration/apt-install.sh autoconf automake make gcc libc6-dev
# the report page is tested in a real browser, headless and offline (tests/test_report_page.py)
command -v chromium >/dev/null 2>&1 || sh integration/apt-install.sh chromium
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e . -e plugins/gaia_buildroot -e plugins/gaia_s3 -e plugins/gaia_http \
    -e plugins/gaia_ssh -e examples/plugins/gaia-toolchain -e ".[test]"
say "installed in $(elapsed "$started")"

native_started=$(date +%s)
native=0
# pytest-xdist: every test has its own directories, XDG cache and servers (free ports, containers
# named by their process), so tests run side by side: the offline ones on every core, the
# remote suite in 4 workers (its tests mostly wait on servers that stall by design, and its time
# bounds have the margins of a loaded machine). GAIA_TEST_WORKERS=0 runs both one at a time.
offline_workers=${GAIA_TEST_WORKERS:-auto}
remote_workers=${GAIA_TEST_WORKERS:-4}
.venv/bin/pytest -p no:cacheprovider -n "$offline_workers" tests plugins "$@" || native=$?
say "offline tests: exit $native in $(elapsed "$native_started")"
remote_started=$(date +%s)
GAIA_REMOTE_SERVERS=native .venv/bin/pytest -p no:cacheprovider -n "$remote_workers" integration "$@" \
    || native=$((native ? native : $?))
say "the remote suite on native servers: exit $native in $(elapsed "$remote_started")"

if [ "${GAIA_TEST_DOCKER:-1}" = 0 ]; then
    say "GAIA_TEST_DOCKER=0: the remote suite did NOT run against the Docker services"
    exit "$native"
fi

engine_answers() {
    .venv/bin/python -c 'import docker; docker.from_env(timeout=3).ping()' >/dev/null 2>&1
}

docker_started=$(date +%s)
if engine_answers; then
    say "using the Docker engine at ${DOCKER_HOST:-the default socket}"
else
    sh integration/docker/install-engine.sh
    if sh integration/docker/dockerd.sh status; then
        say "reusing the private dockerd a run before this one left running"
    else
        trap 'sh integration/docker/dockerd.sh stop' EXIT
        trap 'exit 130' INT TERM
    fi
    DOCKER_HOST=$(sh integration/docker/dockerd.sh start)
    export DOCKER_HOST
fi
images_started=$(date +%s)
sh integration/docker/base-image.sh
(cd integration && ../.venv/bin/python -m servers.images)
say "images ready in $(elapsed "$images_started")"

suite_started=$(date +%s)
docker=0
GAIA_REMOTE_SERVERS=docker .venv/bin/pytest -p no:cacheprovider -n "$remote_workers" -m "remote and not slow" \
    integration "$@" || docker=$?
say "remote suite on Docker services: exit $docker in $(elapsed "$suite_started") ($(elapsed "$docker_started") with the engine and images)"

say "native pass: exit $native; docker pass: exit $docker; all in $(elapsed "$started")"
[ "$native" = 0 ] && [ "$docker" = 0 ]
