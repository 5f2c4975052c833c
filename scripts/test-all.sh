#!/usr/bin/env bash
# Install everything the tests need (servers from Debian, packages from PyPI) and run the
# whole suite: offline tests, plugin tests and the remote suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash integration/install-servers.sh
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e . -e plugins/gaia_buildroot -e plugins/gaia_s3 -e plugins/gaia_http \
    -e plugins/gaia_ssh -e examples/plugins/gaia-toolchain -e ".[test]"
exec .venv/bin/pytest -p no:cacheprovider tests plugins integration "$@"
