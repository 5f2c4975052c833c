"""A team's month of run records, simulated the way a shared cache behaves, for the stats
bench and the report screenshot.

20 hosts: 16 CI runners (debian-12-x86_64, about 10 runs a weekday, a few at weekends)
and 4 laptops (two on debian-13, whose host system never matches CI's objects, and two
on debian-12, read-only like pull-request jobs). The base OS's inputs change every two
or three days (a package bump, a defconfig symbol, a new external tree file); the first
runner to see a new fingerprint misses, builds for 25 to 45 minutes, captures and
uploads, and the others then hit it in the shared tier and afterwards in their own store.
A weekly gc of the shared tier removes objects nobody used for 2 days, so an older
branch's fingerprint misses again (an eviction). A few pull-request jobs find an object
signed by a key their build does not trust (refused). Every record passes
``check_record`` and is published as the real runs publish them: one object per run
under ``records/<day>/<run id>.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gaia_core.checkpoints.records import check_record, new_id
from gaia_core.checkpoints.shared import day_of, record_key

POINT = "base-os"
ANCHOR = "buildroot.build"
CHANGED = ["buildroot.packages", "buildroot.symbols.BR2_PACKAGE_NANO", "buildroot.defconfig (contents)",
           "buildroot.package_versions", "buildroot.external_trees (contents)"]
GIB = 1 << 30
MIB = 1 << 20


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _fp(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def hosts(me: str = "ci-runner-01") -> list[dict[str, Any]]:
    """The team; ``me`` names the first runner (the machine a report is made on)."""
    found = [{"name": me if i == 1 else f"ci-runner-{i:02d}", "system": "debian-12-x86_64", "ci": True}
             for i in range(1, 17)]
    found += [{"name": "laptop-ana", "system": "debian-13-x86_64", "ci": False},
              {"name": "laptop-ben", "system": "debian-13-x86_64", "ci": False},
              {"name": "laptop-chen", "system": "debian-12-x86_64", "ci": False},
              {"name": "laptop-dara", "system": "debian-12-x86_64", "ci": False}]
    return found


def simulate(days: int = 30, seed: int = 7, end: float | None = None, tier: str = "s3:cache",
             me: str = "ci-runner-01") -> list[dict[str, Any]]:
    """Records of every run, oldest first; ``tier`` names the shared store, ``me`` the first runner."""
    rng = random.Random(seed)
    end = time.time() if end is None else end
    start = end - days * 86400
    # the inputs' timeline: a new version every 2-3 days, each changing one input
    versions = [(start - 86400, 0, "missing")]
    t, n = start, 0
    while t < end:
        t += rng.uniform(1.5, 3.5) * 86400
        n += 1
        versions.append((t, n, f"inputs_changed:{rng.choice(CHANGED)}"))
    runs = []
    team = hosts(me)
    for host in team:
        day = start
        while day < end:
            weekday = datetime.fromtimestamp(day, UTC).weekday() < 5
            count = (rng.randint(7, 13) if weekday else rng.randint(0, 3)) if host["ci"] else \
                (rng.randint(0, 4) if weekday else 0)
            for _ in range(count):
                runs.append((day + rng.uniform(7, 20) * 3600, host))
            day += 86400
    runs.sort(key=lambda item: item[0])
    shared: dict[str, float] = {}  # fingerprint -> last use in the shared tier
    local: dict[str, dict[str, float]] = {h["name"]: {} for h in team}
    shared_bytes = 9 * GIB  # the objects of earlier months that stay
    shared_sizes: dict[str, int] = {}  # fingerprint -> the bytes its upload added
    held: dict[str, dict[str, int]] = {h["name"]: {} for h in team}  # host -> fingerprint -> bytes it added
    last_gc = start
    records = []
    for moment, host in runs:
        if moment > end:
            continue
        if moment - last_gc > 7 * 86400:  # the weekly gc of the shared tier, by last use
            gone = [fp for fp, used in shared.items() if moment - used > 2 * 86400]
            for fp in gone:
                del shared[fp]
                shared_bytes -= shared_sizes.pop(fp, 0)
            last_gc = moment
        current = [v for v in versions if v[0] <= moment]
        # most runs build the newest inputs; some a release branch a few versions old, and a
        # third of CI's runs a pull request's branch, whose change only its own runs build
        version = current[-1] if rng.random() > 0.12 or len(current) < 4 else rng.choice(current[-5:-2])
        branch = rng.randrange(1, 400) if host["ci"] and rng.random() < 0.3 else 0
        if branch:
            version = (version[0], f"{version[1]}-pr{branch % 40 + int(moment // 86400 // 3) * 40}",
                       f"inputs_changed:{CHANGED[branch % len(CHANGED)]}")
        fp = _fp("base-os", version[1], host["system"])
        objects = local[host["name"]]
        record: dict[str, Any] = {
            "v": 1, "id": new_id(), "run": new_id(), "at": _iso(moment),
            "host": {"name": host["name"], "system": host["system"]}, "point": POINT, "anchor": ANCHOR,
            "fingerprint": fp, "explain": "", "tier": None, "object": None,
            "bytes": {"downloaded": 0, "uploaded": 0, "captured": 0}, "seconds": {}, "build_seconds": None,
            "saved_seconds": None, "inputs": {"buildroot.packages": _fp(version[1])[:16],
                                              "buildroot.build:host.system": _fp(host["system"])[:16]},
            "result": "ok" if rng.random() > 0.03 else "failed", "gaia": "0.2.0",
        }
        build_time = rng.uniform(25, 45) * 60
        made = {"fingerprint": fp, "signer": "ci-main", "created_at": _iso(moment - 86400), "build_seconds":
                round(build_time, 1)}
        untrusted = not host["ci"] and host["system"] == "debian-12-x86_64" and rng.random() < 0.08
        if fp in objects:
            objects[fp] = moment
            restore = rng.uniform(12, 30)
            record.update(decision="hit", reason="hit", tier="local", object=made,
                          seconds={"restore": round(restore, 2)}, saved_seconds=round(build_time - restore, 1))
        elif untrusted and fp in shared:
            record.update(decision="refused", reason="untrusted:key_not_trusted:ci-main", tier=tier,
                          seconds={"restore": round(rng.uniform(0.2, 1.5), 2)}, build_seconds=round(build_time, 1),
                          explain="")
        elif fp in shared:
            restore = rng.uniform(40, 150)
            moved = int(rng.uniform(0.3, 1.2) * GIB)
            record.update(decision="remote_hit", reason="remote_hit", tier=tier, object=made,
                          bytes={"downloaded": moved, "uploaded": 0, "captured": 0},
                          seconds={"restore": round(restore, 2), "download": round(restore * 0.7, 2)},
                          saved_seconds=round(build_time - restore, 1))
            objects[fp] = moment
            held[host["name"]][fp] = int(rng.uniform(150, 250) * MIB)  # the chunks it lacked
            shared[fp] = moment
            _keep_last(objects, held[host["name"]])
        else:
            known = any(_fp("base-os", v[1], host["system"]) == fp for v in current[:-1]) and version not in current[-1:]
            reason = "remote_missing" if known else (version[2] if objects else "missing")
            if not host["ci"] and host["system"] != "debian-12-x86_64" and not objects:
                reason = "inputs_changed:buildroot.build:host.system"
            explain = {"inputs_changed:buildroot.build:host.system":
                       "buildroot.build:host.system: debian-12-x86_64 -> debian-13-x86_64"}.get(reason, "")
            if reason.startswith("inputs_changed:") and not explain:
                key = reason.partition(":")[2]
                explain = f"{key}: changed package/nano/nano.mk" if "contents" in key else f"{key} changed"
            captured = int(rng.uniform(120, 260) * MIB)
            upload = host["ci"]
            record.update(decision="miss", reason=reason, explain=explain, build_seconds=round(build_time, 1),
                          object=made, bytes={"downloaded": 0, "uploaded": captured if upload else 0,
                                              "captured": captured},
                          seconds={"restore": round(rng.uniform(0.5, 3), 2), "capture": round(rng.uniform(30, 70), 2),
                                   **({"upload": round(rng.uniform(20, 60), 2)} if upload else {})})
            objects[fp] = moment
            held[host["name"]][fp] = captured
            _keep_last(objects, held[host["name"]])
            if upload:
                shared[fp] = moment
                shared_sizes[fp] = captured
                shared_bytes += captured
        local_bytes = 2 * GIB + sum(held[host["name"]].values())  # what every object shares, and their own
        record["stored"] = {"local": local_bytes, **({tier: shared_bytes} if host["ci"] else {})}
        checked = check_record(record)
        assert checked is not None, record
        records.append(checked)
    return records


def _keep_last(objects: dict[str, float], sizes: dict[str, int], keep: int = 6) -> None:
    """The local store's retention (``keep_last``), by last use."""
    while len(objects) > keep:
        oldest = min(objects, key=objects.__getitem__)
        del objects[oldest]
        sizes.pop(oldest, None)


def publish(records: list[dict[str, Any]], store: Path) -> int:
    """Write each run's record as the runs publish them; the number of objects."""
    for record in records:
        t = datetime.fromisoformat(record["at"]).timestamp()
        path = store / record_key(day_of(t + 60), record["run"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"v": 1, "records": [record]}, separators=(",", ":")))
    return len(records)


__all__ = ["POINT", "hosts", "publish", "simulate"]
