"""The quickstart (the Buildroot test tree) as one machine of a team: its point on a shared
``dir`` tier, uploading and sharing its run records, for the records, stats and report tests."""

from __future__ import annotations

import shutil
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
TEAM = """
[checkpoints]
enabled = true
share_records = true

[checkpoints.backends.dir.team]
path = "{shared}"

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
backend = "dir:team"
upload_policy = "always"
"""


def team_quickstart(dest: Path, shared: Path) -> Path:
    """A copy of the quickstart at ``dest`` whose point uses the tier at ``shared``; its build file."""
    shutil.copytree(QUICKSTART, dest, symlinks=True, ignore=shutil.ignore_patterns("build", "out"))
    (dest / "layers" / "checkpoints.toml").write_text(TEAM.format(shared=shared))
    return dest / "build.toml"


def gaia(gaia_cli, *args, code: int = 0):  # type: ignore[no-untyped-def]
    result = gaia_cli(*[str(a) for a in args])
    assert result.exit_code == code, result.output
    return result
