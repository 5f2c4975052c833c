"""Store tiers against a real server, for every backend kind: the order of a chain, the
backfill into a faster tier (measured at the wire), a black-holed tier, a read-only tier,
the offline mode, gc tier by tier, and the bound on a backfill into a tier that stalls.

A backend's test module subclasses :class:`TierContract` beside its contract classes; it
needs the fixtures of :class:`~contract.MeteredContract` (``backend``, ``backend_config``,
``backend_config_at``, ``upstream``). The server under test is one tier of each chain;
``dir`` stores on this machine are the others. Two tiers of one kind sit side by side
under their own names (:func:`as_tier` renames a table and its variables).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from contract import with_tree_plugin
from servers.metering import UP, MeteringProxy
from servers.misbehaving import SilentServer, StallingProxy
from tree_project import POINT, TREE_CLI, TreeProject, changed_copy, make_source, remote_packs, tree_digest

from gaia_core.backends import Backend

#: the probe budget of the black-holed tier (seconds)
PROBE_S = 3.0
#: what a run costs on top of its lookup on a busy machine: setup, a restore of a small tree
RUN_SLACK_S = 20.0
#: the backfill bound of the stalled-tier test (seconds; ``[checkpoints] backfill_timeout``)
BACKFILL_S = 2.0
#: what the end of a run costs after its backfills gave up on a busy machine: the run's
#: records and the interpreter's exit (well under a stalled transfer's 30 s stall budget)
EXIT_SLACK_S = 8.0
#: bytes a stalled tier takes of an upload before it stops reading
STALL_AFTER = 256 << 10

Tier = tuple[str, dict[str, str], str]


def as_tier(config: tuple[str, dict[str, str]], name: str, options: str = "") -> Tier:
    """The backend table of ``config`` named ``name``, its ``*_env`` variables renamed with
    it (so two tiers of one kind do not share them), ``options`` added: (table, env, ref)."""
    table, env = config
    header, _, body = table.strip().partition("\n")
    kind = header.strip().strip("[]").split(".")[2]
    suffix = "_" + re.sub(r"\W", "_", name.upper())
    for var in env:
        body = body.replace(f'"{var}"', f'"{var}{suffix}"')
    renamed = {f"{var}{suffix}": value for var, value in env.items()}
    return f"[checkpoints.backends.{kind}.{name}]\n{body}\n{options}", renamed, f"{kind}:{name}"


def dir_tier(path: Path, name: str, options: str = "") -> Tier:
    path.mkdir(parents=True, exist_ok=True)
    return f'[checkpoints.backends.dir.{name}]\npath = "{path}"\n{options}', {}, f"dir:{name}"


def project(root: Path, tiers: list[Tier], checkpoints: str = "") -> TreeProject:
    env: dict[str, str] = {}
    for _, tier_env, _ in tiers:
        env.update(tier_env)
    return TreeProject(root, "\n".join(table for table, _, _ in tiers), env, chain=[ref for _, _, ref in tiers],
                       checkpoints=checkpoints)


def fingerprints(root: Path) -> list[str]:
    """The objects of the tree point in a ``dir`` tier."""
    base = root / "points" / POINT
    return sorted(p.name for p in base.iterdir() if any(p.glob("manifest*.json"))) if base.is_dir() else []


def queue(ws: TreeProject) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["backend_ref"]: e for e in json.loads((ws.store / "upload-queue.json").read_text())["entries"]}


def tier_seconds(output: str, ref: str) -> float:
    """How long ``ref`` took to answer the restore's lookup, from its ``tiers:`` line."""
    found = re.search(rf"tiers: .*{re.escape(ref)} \w+ \((\d+\.\d)s\)", output)
    assert found, output
    return float(found.group(1))


def gaia_process(ws: TreeProject, *args: str, timeout: float = 300) -> tuple[int, list[tuple[float, str]], float]:
    """``gaia <args>`` in a process of its own, in ``ws``'s environment: its exit code, each
    line of its output (stderr too) with the seconds since the start when it came, and
    the seconds until the process ended."""
    script = ws.root / "gaia_tree.py"
    script.write_text(TREE_CLI)
    env = {**os.environ, **ws.env, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic() - started
    reader.join(timeout=10)
    return code, lines, ended


def line_at(lines: list[tuple[float, str]], text: str) -> float:
    """When the first line holding ``text`` came (seconds since the start)."""
    found = [at for at, line in lines if text in line]
    assert found, f"no line with {text!r} in:\n" + "".join(line for _, line in lines)
    return found[0]


class TierContract:
    @pytest.fixture
    def tree_pm(self, gaia_pm):  # type: ignore[no-untyped-def]
        return with_tree_plugin(gaia_pm)

    def test_tiers_the_first_hit_in_order_wins_and_a_backfill_sends_only_what_the_fast_tier_lacks(
        self, backend: Backend, backend_config_at, upstream, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """The server is the near tier, a directory the far one. Version 1 is in both,
        version 2 (one file of 32 changed) only in the far one: a consumer of version 2
        restores it from there and copies it into the server, sending that file's chunks."""
        first_source = make_source(tmp_path / "src1", files=32, size=128 << 10)
        second_source = changed_copy(first_source, tmp_path / "src2", "dir1/file007.bin")
        far = dir_tier(tmp_path / "far", "far")
        with MeteringProxy(upstream) as proxy:
            near = as_tier(backend_config_at(proxy.address), "near")
            both = project(tmp_path / "producer", [near, far])
            both.write(first_source, "1")
            both.run(gaia_cli, tree_pm)
            first_up = proxy.reset()[UP]
            far_only = project(tmp_path / "producer2", [far])
            far_only.write(second_source, "2")
            far_only.run(gaia_cli, tree_pm)
            assert len(fingerprints(tmp_path / "far")) == 2 and len(backend.list_fingerprints(POINT)) == 1

            consumer = project(tmp_path / "consumer", [near, far])
            consumer.write(first_source, "1")
            out = consumer.run(gaia_cli, tree_pm).output
            assert f"via {near[2]}" in out and "backfill" not in out, out  # both have it: the first wins
            proxy.reset()
            fresh = project(tmp_path / "consumer2", [near, far])
            fresh.write(second_source, "2")
            out = fresh.run(gaia_cli, tree_pm).output
            backfill = proxy.reset()
            assert "via dir:far" in out and f"into {near[2]} in the background" in out, out
            assert fresh.builds() == 0 and tree_digest(fresh.out) == tree_digest(second_source)
            assert len(backend.list_fingerprints(POINT)) == 2
            assert queue(fresh)[near[2]]["state"] == "uploaded"
            print(f"first upload {first_up} B up; backfill of version 2 {backfill[UP]} B up")
            assert backfill[UP] <= 0.1 * first_up, (backfill, first_up)

            last = project(tmp_path / "consumer3", [near, far])
            last.write(second_source, "2")
            assert f"via {near[2]}" in last.run(gaia_cli, tree_pm).output

    def test_a_black_holed_tier_costs_its_probe_budget_once_and_later_runs_do_not_contact_it(
        self, backend_config, backend_config_at, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """Runner, office, cloud; the office accepts connections and never answers. The first
        job waits for it at most its probe budget and restores from the cloud; the next job
        on this machine (a fresh workspace) opens no connection to it. Neither fails."""
        source = make_source(tmp_path / "src", files=8, size=64 << 10)
        cloud = as_tier(backend_config, "cloud")
        producer = project(tmp_path / "producer", [cloud])
        producer.write(source, "1")
        producer.run(gaia_cli, tree_pm)
        with SilentServer() as hole:
            office = as_tier(backend_config_at(hole.address), "office", options=f"probe_timeout = {PROBE_S}\n")
            runner = dir_tier(tmp_path / "runner", "runner")
            chain = [runner, office, cloud]
            first = project(tmp_path / "first", chain)
            first.write(source, "1")
            started = time.monotonic()
            out = first.run(gaia_cli, tree_pm).output
            first_s = time.monotonic() - started
            assert first.builds() == 0 and f"via {cloud[2]}" in out, out
            assert hole.accepted >= 1, "the black hole was never asked"
            assert tier_seconds(out, office[2]) <= PROBE_S + 1.5, out
            accepted = hole.accepted

            second = project(tmp_path / "second", chain)
            second.write(source, "1")
            started = time.monotonic()
            out = second.run(gaia_cli, tree_pm).output
            second_s = time.monotonic() - started
            status = second.gaia(gaia_cli, tree_pm, "checkpoints", "status", second.build, "--json")
            time.sleep(0.5)  # a connection on its way would be accepted by now
            assert hole.accepted == accepted, "a later run connected to the tier remembered down"
        print(f"first run {first_s:.1f}s, second run {second_s:.1f}s (probe budget {PROBE_S}s)")
        assert second.builds() == 0 and "not contacted again until" in out, out
        assert tier_seconds(out, office[2]) < 0.5
        assert first_s < PROBE_S + RUN_SLACK_S
        tiers = {t["ref"]: t for t in status.json["points"][0]["tiers"]}
        assert tiers[office[2]]["down_until"] and tiers[cloud[2]]["down_until"] is None

    def test_a_backfill_into_a_tier_that_stalls_ends_within_its_bound_and_stays_queued(
        self, backend: Backend, backend_config, backend_config_at, upstream, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """The far tier (a directory) holds the object; the near tier is the server behind a
        proxy that stops reading an upload after 256 KiB, so the backfill into it freezes
        mid-body. The run says it waits, waits ``backfill_timeout`` (2 s), says the backfill
        stopped and exits (in a process of its own: a thread left blocked must not hold the
        exit); the backfill stays pending, and ``retry`` sends it once the server is reachable."""
        source = make_source(tmp_path / "src", files=16, size=128 << 10)
        far = dir_tier(tmp_path / "far", "far")
        producer = project(tmp_path / "producer", [far])
        producer.write(source, "1")
        producer.run(gaia_cli, tree_pm)
        bound = f'backfill_timeout = "{BACKFILL_S:.0f}s"'
        with StallingProxy(upstream, direction=UP, after=STALL_AFTER) as proxy:
            near = as_tier(backend_config_at(proxy.address), "near")
            consumer = project(tmp_path / "consumer", [near, far], checkpoints=bound)
            consumer.write(source, "1")
            code, lines, ended = gaia_process(consumer, "run", str(consumer.build))
            stalled = proxy.relayed[UP]
        out = "".join(line for _, line in lines)
        assert code == 0 and consumer.builds() == 0 and "via dir:far" in out, out
        assert stalled >= STALL_AFTER, f"the backfill never reached the stall ({stalled} B up)"
        waiting = line_at(lines, f"waiting for the backfills into faster tiers (at most {BACKFILL_S:.0f}s")
        stopped = line_at(lines, f"stopped: it did not finish within {BACKFILL_S:.0f}s")
        print(f"run {ended:.1f}s; waiting said at {waiting:.1f}s, stopped at {stopped:.1f}s")
        assert stopped - waiting >= BACKFILL_S - 0.5, "the wait was announced only after it ended"
        assert ended - waiting < BACKFILL_S + EXIT_SLACK_S, (waiting, ended)
        assert ended < BACKFILL_S + RUN_SLACK_S, ended
        assert queue(consumer)[near[2]]["state"] == "pending"
        assert backend.list_fingerprints(POINT) == []

        direct = project(tmp_path / "consumer", [as_tier(backend_config, "near"), far], checkpoints=bound)
        direct.write(source, "1")
        retried = direct.gaia(gaia_cli, tree_pm, "checkpoints", "retry", direct.build, "--json")
        assert retried.exit_code == 0 and retried.json["uploaded"] == 1, retried.output
        assert len(backend.list_fingerprints(POINT)) == 1

    def test_a_read_only_tier_on_a_server_serves_and_is_never_written(
        self, backend: Backend, backend_config, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        first_source = make_source(tmp_path / "src1", files=4, size=64 << 10)
        second_source = changed_copy(first_source, tmp_path / "src2", "dir0/file000.bin")
        producer = project(tmp_path / "producer", [as_tier(backend_config, "cloud")])
        producer.write(first_source, "1")
        producer.run(gaia_cli, tree_pm)
        before = (backend.list_fingerprints(POINT), remote_packs(backend))

        cloud = as_tier(backend_config, "cloud", options="read_only = true\n")
        local = dir_tier(tmp_path / "local", "local")
        consumer = project(tmp_path / "consumer", [cloud, local])
        consumer.write(first_source, "1")
        assert f"via {cloud[2]}" in consumer.run(gaia_cli, tree_pm).output
        consumer.write(second_source, "2")
        consumer.run(gaia_cli, tree_pm)
        assert consumer.builds() == 1 and len(fingerprints(tmp_path / "local")) == 1
        assert cloud[2] not in queue(consumer)
        gc = consumer.gaia(gaia_cli, tree_pm, "checkpoints", "gc", consumer.build, "--remote", "--keep-last", "1",
                           "--grace", "0s", "--json")
        assert gc.exit_code == 0, gc.output
        assert gc.json["tiers"][cloud[2]]["skipped"].startswith("read_only")
        assert (backend.list_fingerprints(POINT), remote_packs(backend)) == before

    @pytest.mark.parametrize("how", ["--offline", "GAIA_OFFLINE=1"])
    def test_offline_a_run_opens_no_connection_and_queues_its_uploads(
        self, backend: Backend, backend_config_at, upstream, gaia_cli, tree_pm, tmp_path: Path, how: str
    ) -> None:
        source = make_source(tmp_path / "src", files=4, size=64 << 10)
        with MeteringProxy(upstream) as proxy:
            cloud = as_tier(backend_config_at(proxy.address), "cloud")
            runner = dir_tier(tmp_path / "runner", "runner")
            ws = project(tmp_path / "ws", [runner, cloud])
            ws.write(source, "1")
            args, env = (["--offline"], {}) if how == "--offline" else ([], {"GAIA_OFFLINE": "1"})
            result = ws.gaia(gaia_cli, tree_pm, "run", ws.build, *args, env=env)
            assert result.exit_code == 0, result.output
            assert proxy.connections == 0, "an offline run connected to the server"
            assert result.output.count(f"offline ({how}):") == 1, result.output
            assert len(fingerprints(tmp_path / "runner")) == 1
            assert queue(ws)[cloud[2]]["state"] == "pending"
            retried = ws.gaia(gaia_cli, tree_pm, "checkpoints", "retry", ws.build, "--json")
            assert retried.exit_code == 0 and retried.json["uploaded"] == 1, retried.output
            assert proxy.connections > 0
        assert len(backend.list_fingerprints(POINT)) == 1

    def test_gc_collects_tier_by_tier_and_a_dry_run_says_what_each_would_free(
        self, backend: Backend, backend_config, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        sources = [make_source(tmp_path / "src1", files=4, size=64 << 10)]
        sources += [changed_copy(sources[0], tmp_path / f"src{n}", "dir0/file000.bin") for n in (2, 3)]
        cloud = as_tier(backend_config, "cloud")
        runner = dir_tier(tmp_path / "runner", "runner")
        ws = project(tmp_path / "ws", [runner, cloud])
        for version, source in enumerate(sources, 1):
            ws.write(source, str(version))
            ws.run(gaia_cli, tree_pm)
        assert len(backend.list_fingerprints(POINT)) == len(fingerprints(tmp_path / "runner")) == 3
        rules = ["--keep-last", "1", "--grace", "0s"]

        dry = ws.gaia(gaia_cli, tree_pm, "checkpoints", "gc", ws.build, "--remote", *rules, "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        assert list(dry.json["tiers"]) == ["local", runner[2], cloud[2]]
        assert all(part["freed"] > 0 for part in dry.json["tiers"].values()), dry.json["tiers"]
        text = ws.gaia(gaia_cli, tree_pm, "checkpoints", "gc", ws.build, "--remote", *rules, "--dry-run").output
        assert f"checkpoint gc ({cloud[2]}): would remove 2 object(s), would free " in text, text
        assert len(backend.list_fingerprints(POINT)) == 3

        one = ws.gaia(gaia_cli, tree_pm, "checkpoints", "gc", ws.build, "--tier", cloud[2], *rules, "--json")
        assert one.exit_code == 0 and list(one.json["tiers"]) == [cloud[2]], one.output
        assert len(backend.list_fingerprints(POINT)) == 1 and len(fingerprints(tmp_path / "runner")) == 3
        ws.write(sources[2], "3")
        again = project(tmp_path / "again", [cloud])
        again.write(sources[2], "3")
        again.run(gaia_cli, tree_pm)
        assert again.builds() == 0 and tree_digest(again.out) == tree_digest(sources[2])
