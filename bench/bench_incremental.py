"""Checkpoints that differ a little: bytes stored and moved, and an incremental restore in place.

    python bench/bench_incremental.py [--changed 0.01] [--runs 3] [--keep DIR] [--restore-into DIR]

On the corpus of corpus.py (>= 300 MB), as a producer and a consumer sharing a ``dir``
store (the built-in backend, so the figures are gaia's own, not a network's):

1. checkpoint A is captured and uploaded;
2. ``--changed`` of the files (1% by default, spread over the tree) get new content, and
   checkpoint B is captured (its receipt: unchanged files are not read) and uploaded:
   bytes stored and sent for B / bytes of A (target <= 5%), the entry list's own bytes
   printed apart, and both captures' wall times;
3. a consumer with an empty local store restores A from the store, then B over it in
   place: bytes downloaded for B / the changed chunks' bytes (target <= 1.1x), and wall
   time of that restore / a full restore of B into an empty directory (target <= 10%).

Both restores are timed as restore.py does them, up to the swap: the full one writes the
tree with its placed mtimes and takes its receipt by a walk; the one in place fetches what it
lacks (as a download does: looking in the tree's receipt for the chunks first), updates the
tree (every chunk is in the store after the download: restore.py does not look again),
places the mtimes of what it touched and writes the receipt it took on the way.

``--restore-into DIR`` puts the consumer (its store, its tree and the full restore) there
instead of into the work directory: a fresh filesystem, where creating files does not pay
for what earlier runs deleted (bench/README.md says why that matters on some disks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from corpus import build_corpus, drop_caches, fresh, mib, timed

from gaia_core.anchors import Target
from gaia_core.builtin.dir_backend import DirBackend, DirConfig
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.receipt import RECEIPT
from gaia_core.checkpoints.transfer import Transfers
from gaia_core.checkpoints.treecapture import capture_tree
from gaia_core.checkpoints.treeimport import import_from_tree
from gaia_core.checkpoints.mtimes import place_mtimes, plan_placement
from gaia_core.checkpoints.treewrite import receipts_of_restored, update_tree, write_tree

EXCLUDE = (RECEIPT,)


def change_files(root: Path, share: float) -> int:
    """Give every n-th regular file new content (a line appended); returns how many."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and os.access(p, os.W_OK)
                   and p.name != RECEIPT)
    step = max(1, round(1 / share))
    changed = files[::step]
    for path in changed:
        with open(path, "ab") as f:
            f.write(b"\nchanged by bench_incremental\n")
    return len(changed)


def capture(name: str, tree_dir: Path, packs: PackStore, work: Path, receipts=None):  # type: ignore[no-untyped-def]
    target = Target(name, tree_dir, rootfs_dirs=("*",))
    info = capture_tree([target], packs, fresh(work / "staging"), exclude=EXCLUDE, receipts=receipts,
                        receipt_header={"bench": name})
    for pack in info.packs:
        packs.add(pack)
    os.replace(info.receipts[name], tree_dir / RECEIPT)
    return info, {"tree": info.tree(), "targets": [{"name": name}]}


def transfers(packs: PackStore, remote: Path, work: Path) -> Transfers:
    def make() -> DirBackend:
        return DirBackend("bench", DirConfig(path=str(remote)))

    return Transfers(make(), make, packs, work, parallel=4)


def full_restore(packs: PackStore, manifest: dict, dest: Path) -> None:
    """What restore.py does for a full restore, up to the swap: write, place, receipt."""
    staged = fresh(dest.parent / "staged")
    entries, held = tree.entries_held(packs, manifest)  # read as the helpers start, kept for the receipt
    info = write_tree(entries, staged, packs, files=manifest["tree"]["files"],  # helpers started at once
                      place=None if held is None else
                      lambda listed: plan_placement((e.mtime_ns for e in listed), clock_dir=staged))
    if info.placement is None:  # a list too long to hold: placed by a walk
        place_mtimes([staged / "tree"], clock_dir=staged)
    os.replace(staged / "tree", dest)
    receipts_of_restored([Target("tree", dest, rootfs_dirs=("*",))],
                         tree.raw_entries(packs, manifest) if held is None else held, {}, EXCLUDE, set(), [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--restore-into", type=Path, help="the consumer's directory (default: the work directory)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    consumer_dir = args.restore_into or work
    try:
        size, entries = build_corpus(work / "corpus")
        source = fresh(work / "producer") / "tree"
        shutil.copytree(work / "corpus", source, symlinks=True)
        remote = fresh(work / "remote")
        print(f"corpus: {mib(size)} in {entries} entries, {os.cpu_count()} CPUs"
              f"{f', the consumer in {args.restore_into}' if args.restore_into else ''}")

        producer = PackStore(fresh(work / "producer-store"))
        started = time.perf_counter()
        info_a, manifest_a = capture("tree", source, producer, work)
        capture_a = time.perf_counter() - started
        up = transfers(producer, remote, work)
        up.sync_index()
        chunks_a = {c for c, _ in tree.chunks(producer, manifest_a)}
        sent_a = up.send(up.missing(chunks_a))
        changed = change_files(source, args.changed)
        started = time.perf_counter()
        info_b, manifest_b = capture("tree", source, producer, work, receipts={"tree": source / RECEIPT})
        capture_b = time.perf_counter() - started
        up.sync_index()
        chunks_b = {c for c, _ in tree.chunks(producer, manifest_b)}
        sent_b = up.send(up.missing(chunks_b))
        up.close()
        parts_b = sum(p["size"] for p in info_b.tree()["parts"])
        print(f"changed {changed} files ({args.changed:.0%}); A: {mib(info_a.packed)} stored, {mib(sent_a)} sent; "
              f"B: {mib(info_b.new_bytes)} new, {mib(sent_b)} sent (entry list {mib(parts_b)} plain)")
        store_ratio, send_ratio = info_b.new_bytes / info_a.packed, sent_b / sent_a
        print(f"capture: A {capture_a:.2f} s (every file read), B {capture_b:.2f} s (with A's receipt: only the "
              f"changed files read)")
        print(f"dedup: B stored / A = {store_ratio:.3f}, B sent / A sent = {send_ratio:.3f} (target <= 0.05)  "
              f"{'PASS' if send_ratio <= 0.05 else 'MISS'}")

        incremental_runs, full_runs, downloaded, cpu = [], [], [], {"incremental": [], "full": []}
        for _ in range(args.runs):
            consumer = PackStore(fresh(consumer_dir / "consumer-store"))
            down = transfers(consumer, remote, consumer_dir)
            down.sync_index()
            target = Target("tree", fresh(consumer_dir / "consumer") / "tree", rootfs_dirs=("*",))
            target.path.mkdir()
            down.fetch(dict(consumer.absent(tree.parts(manifest_a))))
            down.fetch(dict(consumer.absent(tree.chunks(consumer, manifest_a))))
            os.rmdir(target.path)
            full_restore(consumer, manifest_a, target.path)
            drop_caches()

            def incremental() -> None:
                # as remote.download_found: the parts, then the chunks the store lacks, those the
                # tree holds from it, the rest from the remote; every chunk is then in the store,
                # so restore.py does not look them all up again before it touches the tree
                moved = down.fetch(dict(consumer.absent(tree.parts(manifest_b))))
                held = tree.entry_list(consumer, manifest_b)  # read once, for the lookup and the update
                wanted = dict(consumer.absent(tree.needed_chunks(consumer, manifest_b, held)))
                if wanted:
                    import_from_tree([target], {"tree": target.path / RECEIPT}, consumer, fresh(consumer_dir / "tmp"),
                                     wanted)
                moved += down.fetch(wanted)
                downloaded.append(moved)
                update = update_tree(held, [target], consumer, receipts={"tree": target.path / RECEIPT},
                                     unchanged=lambda e, r: not r.relocated, exclude=EXCLUDE, again=lambda: held)
                update.place(target.path.parent, None)
                update.commit_receipts({}, set())

            wall, seconds = timed(incremental)
            incremental_runs.append(wall)
            cpu["incremental"].append(seconds)
            drop_caches()
            wall, seconds = timed(lambda: full_restore(consumer, manifest_b, fresh(consumer_dir / "full") / "tree"))
            full_runs.append(wall)
            cpu["full"].append(seconds)
            down.close()
        incremental, full = statistics.median(incremental_runs), statistics.median(full_runs)
        moved = statistics.median(downloaded)
        bytes_ratio = moved / max(info_b.new_bytes, 1)
        time_ratio = incremental / full
        print(f"incremental restore: wall s {[round(t, 2) for t in incremental_runs]}, full restore "
              f"{[round(t, 2) for t in full_runs]}")
        # the machine's load moves the wall times; the CPU seconds (all threads) much less
        print(f"incremental restore: cpu s {[round(t, 3) for t in cpu['incremental']]}, full restore "
              f"{[round(t, 2) for t in cpu['full']]}")
        print(f"downloaded for B: {mib(moved)} / changed chunks {mib(info_b.new_bytes)} = {bytes_ratio:.2f}x "
              f"(target <= 1.1x)  {'PASS' if bytes_ratio <= 1.1 else 'MISS'}")
        print(f"restore B over A: {incremental:.2f} s / full restore {full:.2f} s = {time_ratio:.3f} "
              f"(target <= 0.10)  {'PASS' if time_ratio <= 0.10 else 'MISS'}")
        return 0 if send_ratio <= 0.05 and bytes_ratio <= 1.1 and time_ratio <= 0.10 else 1
    finally:
        if args.restore_into:
            for name in ("consumer-store", "consumer", "full", "tmp"):
                shutil.rmtree(args.restore_into / name, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
