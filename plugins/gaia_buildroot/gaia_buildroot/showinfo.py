"""``make show-info``: Buildroot's own account of the packages of a configured out dir.

It prints one JSON object, package name -> version, sources, hash files, package dir,
stamp dir and dependencies (``FINAL_ALL_DEPENDENCIES``): the units and their graph. Making
it parses every package's ``.mk`` (seconds on a real tree), so the answer is kept per
build (one gaia command) and ``.config``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import weakref
from typing import TYPE_CHECKING, Any

from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_buildroot.layout import BuildrootLayout
    from gaia_core.build import Build

#: seconds ``make show-info`` may take (it parses every .mk of the tree)
TIMEOUT_S = 600

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def show_info(build: Build, layout: BuildrootLayout, config: bytes) -> dict[str, Any]:
    """The packages ``make show-info`` lists for the out dir configured with ``config``."""
    key = hashlib.sha256(config).hexdigest()
    with _lock:
        found = _cache.get(build, {}).get(key)
    if found is not None:
        return found
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKEFLAGS", "MFLAGS", "MAKELEVEL"))}
    env.update(layout.make_env())
    argv = ["make", "-s", "--no-print-directory", "-C", str(layout.src_dir), f"O={layout.out_dir}", "show-info"]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckpointError(f"make show-info failed: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CheckpointError(f"make show-info exited {done.returncode}: {' / '.join(tail)}")
    found = parse(done.stdout)
    with _lock:
        _cache.setdefault(build, {})[key] = found
    return found


def parse(text: str) -> dict[str, Any]:
    """The JSON object in ``make show-info``'s output (make may print lines around it)."""
    start = text.find("{")
    if start < 0:
        raise CheckpointError("make show-info printed no JSON object")
    try:
        data, _end = json.JSONDecoder().raw_decode(text[start:])
    except ValueError as exc:
        raise CheckpointError(f"make show-info printed no valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CheckpointError("make show-info printed no object of packages")
    return data


__all__ = ["parse", "show_info"]
