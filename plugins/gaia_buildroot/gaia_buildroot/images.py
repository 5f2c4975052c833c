"""The build's deliverables: ``<run dir>/images/`` and ``<run dir>/manifest.json``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.atomic import write_json
from gaia_core.fingerprints import sha256_file

if TYPE_CHECKING:
    from gaia_core.build import Build


def images_dir(build: Build) -> Path:
    return build.run_dir / "images"


def describe_images(root: Path, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every file under ``root`` with its size and sha256, sorted by path.

    ``exclude`` names top-level directories left out (an unpacked root filesystem).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in exclude]
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found.append({"path": rel, "symlink": os.readlink(path)})
            elif path.is_file():
                found.append(
                    {
                        "path": rel,
                        "bytes": path.stat().st_size,
                        "sha256": sha256_file(path),
                    }
                )
    return found


def write_manifest(build: Build, files: list[dict[str, Any]], **extra: Any) -> Path:
    path = build.run_dir / "manifest.json"
    write_json(
        path,
        {
            "build": build.name,
            "generated_at": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "images_dir": str(images_dir(build)),
            "images": files,
            "total_bytes": sum(f.get("bytes", 0) for f in files),
            **extra,
        },
        sort_keys=True,
    )
    return path
