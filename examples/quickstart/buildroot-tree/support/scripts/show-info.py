"""``make show-info``: the enabled packages as Buildroot prints them (package/pkg-utils.mk,
json-info), for the fields gaia reads.

    show-info.py <topdir> '<name>|<type>|<version>|<dependencies>|<package dir>|<stamp dir>|<source>'...

Dependencies are space-separated; the hash file is <package dir>/<raw name>.hash when it
exists, as Buildroot's <PKG>_HASH_FILES; <source> is empty for a package that downloads none.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    topdir, records = argv[0], argv[1:]
    packages = {}
    for record in records:
        name, kind, version, deps, package_dir, stamp_dir, source = record.split("|")
        raw = name.removeprefix("host-")
        hash_file = f"{package_dir}/{raw}.hash"
        item = {
            "type": kind, "name": raw, "virtual": False, "version": version, "dl_dir": raw,
            "downloads": [{"source": source, "uris": []}] if source else [],
            "hashes": [hash_file] if os.path.isfile(os.path.join(topdir, hash_file)) else [],
            "package_dir": package_dir, "stamp_dir": stamp_dir,
            "dependencies": sorted(set(deps.split())),
        }
        if kind == "target":
            item.update(install_target=True, install_staging=False, install_images=False)
        packages[name] = item
    print(json.dumps(packages, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
