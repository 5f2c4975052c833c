"""Debian's chromium, headless and offline, for tests that must see a page as a browser does.

``scripts/test-all.sh`` installs it (``integration/apt-install.sh chromium``). The browser
runs with a fresh profile, no sandbox (tests run as root), no GPU, no background traffic of
its own, and a host resolver that resolves nothing: a page that tried to load anything
from a network would fail to (and its Content-Security-Policy forbids it anyway).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-default-browser-check",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0")


def executable() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed; scripts/test-all.sh installs it "
                "(sh integration/apt-install.sh chromium)")


@dataclasses.dataclass
class Rendered:
    dom: str
    #: what the page logged to its console (errors, CSP violations), one message a line
    console: list[str]
    screenshot: Path


def render(page: Path, workdir: Path, *, width: int = 1280, height: int = 2200) -> Rendered:
    """The page's DOM after its scripts ran, its console messages, and a screenshot."""
    url = page.resolve().as_uri()
    common = [executable(), *FLAGS, f"--window-size={width},{height}"]
    dumped = subprocess.run([*common, f"--user-data-dir={workdir / 'profile-dom'}", "--dump-dom", url],
                            capture_output=True, text=True, timeout=120, check=True)
    shot = workdir / "screenshot.png"
    taken = subprocess.run([*common, f"--user-data-dir={workdir / 'profile-shot'}", f"--screenshot={shot}", url],
                           capture_output=True, text=True, timeout=120, check=True)
    console = [line for line in (dumped.stderr + taken.stderr).splitlines() if ":CONSOLE" in line]
    return Rendered(dumped.stdout, console, shot)
