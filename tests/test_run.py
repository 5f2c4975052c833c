"""The executor: order, parallelism, failures, logs, skips, dry run, cancellation."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gaia_core.config.loader import load_build
from gaia_core.errors import ExitCode, TaskFailed
from gaia_core.plan import build_plan
from gaia_core.plugins import Registry
from gaia_core.run import RunState, TaskContext, execute, sanitize_line
from gaia_core.tasks import Task


@pytest.fixture
def run_demo(gaia_demo_build, gaia_demo_pm):
    """Write ``[demo.tasks]``, load, plan and execute; returns (result, lines, build, plan)."""

    def run(tasks, *, max_parallel=1, dry_run=False, state=None):
        build = load_build(gaia_demo_build(tasks), registry=Registry(gaia_demo_pm))
        plan = build_plan(build)
        lines: list[str] = []
        result = execute(plan, build, dry_run=dry_run, max_parallel=max_parallel, echo=lines.append, state=state)
        return result, lines, build, plan

    return run


def starts(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[1] for line in lines if line.startswith("RUN: ")]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def running(args: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """A command with its output piped as text; killed at the end if it still runs."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stopped(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str, float]:
    """Send ``sig`` to ``proc`` and wait for its end: its output, and the seconds it took."""
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return out, err, time.monotonic() - started


def wait_until(predicate, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- sequential --------------------------------------------------------------------------


def test_sequential_run_follows_plan_order_and_streams_prefixed_output(run_demo):
    result, lines, build, plan = run_demo(
        {
            "b": {"cmd": ["sh", "-c", "printf '\\033[1;32mgreen\\033[0m\\n'; echo to-stderr >&2"]},
            "a": {"log": ["hello from a"]},
            "c": {"after": ["demo.b"]},
        }
    )
    assert result.ok and result.exit_code == ExitCode.OK
    # the stage barrier has no stage producers here, so nothing orders it after core.init
    assert (
        starts(lines) == [t.id for t in plan.order] == ["core.barrier.stage", "core.init", "demo.a", "demo.b", "demo.c"]
    )
    assert "[demo.a] hello from a" in lines
    assert "[demo.b] green" in lines  # ANSI stripped
    assert "[demo.b] to-stderr" in lines  # stderr merged
    assert any(line.startswith("DONE: demo.b (") for line in lines)
    assert "  status: ok" in lines[lines.index("SUMMARY:") :]


def test_every_task_writes_its_log(run_demo):
    result, lines, build, plan = run_demo({"a": {"cmd": ["sh", "-c", "echo out-line"], "log": ["said"]}})
    log_dir = build.run_dir / "logs"
    assert sorted(p.name for p in log_dir.iterdir()) == sorted(f"{t.id}.log" for t in plan.order)
    text = (log_dir / "demo.a.log").read_text()
    assert "said\nout-line\n" in text
    assert text.endswith(")\n") and "DONE (" in text


def test_core_init_creates_the_workspace_dirs(run_demo):
    result, lines, build, plan = run_demo({})
    assert result.ok
    assert build.workspace.build_dir.is_dir() and build.workspace.out_dir.is_dir() and build.run_dir.is_dir()


# -- failures ----------------------------------------------------------------------------


def test_failure_stops_new_tasks_and_summarizes(run_demo):
    result, lines, build, plan = run_demo(
        {"a": {"fail": "broken on purpose"}, "b": {"cmd": ["touch", "b-ran"]}, "c": {"after": ["demo.a"]}}
    )
    assert not result.ok and result.exit_code == ExitCode.FAILED
    assert starts(lines) == ["core.barrier.stage", "core.init", "demo.a"]
    assert any(line.startswith("FAIL: demo.a (") and line.endswith(") broken on purpose") for line in lines)
    assert not (build.workspace.root / "b-ran").exists()
    assert result.statuses["demo.b"] == result.statuses["demo.c"] == "not-run"
    summary = lines[lines.index("SUMMARY:") :]
    assert "  status: failed" in summary
    assert any(line.startswith("  tasks: ok=2 failed=1 skipped=0 not-run=2") for line in summary)
    assert "  failed_tasks: demo.a" in summary
    assert f"    {build.run_dir / 'logs' / 'demo.a.log'}" in summary


def test_failed_command_reports_exit_status_and_argv(run_demo):
    result, lines, *_ = run_demo({"a": {"cmd": ["sh", "-c", "exit 3"]}})
    assert result.errors["demo.a"] == "command failed (exit 3): sh -c 'exit 3'"


def test_unexpected_exception_logs_traceback_but_reports_one_line(run_demo):
    result, lines, build, _ = run_demo({"a": {"crash": True}, "b": {"fail": "plain"}}, max_parallel=2)
    assert result.errors["demo.a"] == "RuntimeError: demo task crashed"
    crash_log = (build.run_dir / "logs" / "demo.a.log").read_text()
    assert "Traceback (most recent call last)" in crash_log
    assert "Traceback" not in (build.run_dir / "logs" / "demo.b.log").read_text()
    assert not any("Traceback" in line for line in lines)


def test_missing_program_fails_the_task_with_a_message(run_demo):
    result, *_ = run_demo({"a": {"cmd": ["/nonexistent/prog"]}})
    assert result.errors["demo.a"].startswith("cannot start '/nonexistent/prog'")


# -- parallel ----------------------------------------------------------------------------


RENDEZVOUS = "touch {me}; for i in $(seq 100); do [ -e {other} ] && exit 0; sleep 0.05; done; exit 1"


def test_parallel_runs_independent_tasks_at_once(run_demo):
    # each task waits for the other to have started: only passes when both run together
    tasks = {
        "a": {"cmd": ["sh", "-c", RENDEZVOUS.format(me="a.started", other="b.started")]},
        "b": {"cmd": ["sh", "-c", RENDEZVOUS.format(me="b.started", other="a.started")]},
        "c": {"after": ["demo.a", "demo.b"]},
    }
    result, lines, *_ = run_demo(tasks, max_parallel=2)
    assert result.ok, lines
    assert starts(lines)[-1] == "demo.c"


def test_parallel_failure_lets_running_tasks_finish_but_starts_nothing_new(run_demo):
    tasks = {
        "a": {"cmd": ["sh", "-c", "sleep 0.2; exit 1"]},
        "b": {"cmd": ["sh", "-c", "sleep 0.6; touch b-finished"]},
        "c": {"after": ["demo.b"], "cmd": ["touch", "c-ran"]},
    }
    result, lines, build, _ = run_demo(tasks, max_parallel=4)
    assert result.statuses["demo.a"] == "failed"
    assert result.statuses["demo.b"] == "ok"
    assert (build.workspace.root / "b-finished").exists()
    assert result.statuses["demo.c"] == "not-run"
    assert not (build.workspace.root / "c-ran").exists()


def test_max_parallel_zero_means_cpu_count(run_demo):
    result, *_ = run_demo({"a": {}, "b": {}}, max_parallel=0)
    assert result.ok


# -- skipping ----------------------------------------------------------------------------


def test_task_in_state_skipped_is_not_run_and_counts_as_done(run_demo):
    tasks = {
        "a": {"skip": {"demo.b": "restored from checkpoint"}},
        "b": {"after": ["demo.a"], "cmd": ["touch", "b-ran"]},
        "c": {"after": ["demo.b"]},
    }
    result, lines, build, _ = run_demo(tasks)
    assert result.ok
    assert "SKIP: demo.b (restored from checkpoint)" in lines
    assert "RUN: demo.b" not in lines
    assert "RUN: demo.c" in lines
    assert not (build.workspace.root / "b-ran").exists()
    assert result.statuses["demo.b"] == "skipped"
    assert any("skipped=1" in line for line in lines)


def test_tasks_share_state_data(gaia_demo_build, gaia_demo_pm):
    build = load_build(gaia_demo_build({}), registry=Registry(gaia_demo_pm))
    from gaia_core.plan import Plan

    seen = []
    plan = Plan(
        [
            Task("put", run=lambda ctx: ctx.state.data.update(key="value")),
            Task("get", after=["put"], run=lambda ctx: seen.append(ctx.state.data["key"])),
        ]
    )
    assert execute(plan, build, echo=lambda line: None).ok
    assert seen == ["value"]


# -- dry run -----------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_runs_nothing(run_demo, tmp_path):
    result, lines, build, plan = run_demo({"a": {"cmd": ["touch", "ran"], "fail": "never"}}, dry_run=True)
    assert result.ok
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("build.toml")]
    assert [line for line in lines if line.startswith("DRY-RUN: ") and "(" in line][: len(plan.order)] == [
        f"DRY-RUN: {t.id} ({t.module}/{t.phase})" for t in plan.order
    ]
    assert not any(line.startswith(("RUN:", "[")) for line in lines)


def test_run_cmd_in_dry_run_only_logs(gaia_demo_build, gaia_demo_pm, tmp_path):
    build = load_build(gaia_demo_build({}), registry=Registry(gaia_demo_pm))
    lines: list[str] = []
    ctx = TaskContext(Task("t"), build, dry_run=True, state=RunState(), echo=lines.append)
    ctx.run_cmd(["touch", str(tmp_path / "x")])
    assert lines == [f"[t] DRY-RUN: touch {tmp_path / 'x'}"]
    assert not (tmp_path / "x").exists()


# -- run_cmd -----------------------------------------------------------------------------


@pytest.fixture
def ctx_factory(gaia_demo_build, gaia_demo_pm):
    build = load_build(gaia_demo_build({}), registry=Registry(gaia_demo_pm))

    def make(state=None):
        lines: list[str] = []
        return TaskContext(Task("t"), build, dry_run=False, state=state or RunState(), echo=lines.append), lines

    return make


def test_run_cmd_merges_env_uses_cwd_and_devnull_stdin(ctx_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("INHERITED", "from-parent")
    ctx, lines = ctx_factory()
    ctx.run_cmd(
        ["sh", "-c", 'echo "$INHERITED $ADDED $(pwd)"; cat; echo after-cat'], cwd=tmp_path, env={"ADDED": "extra"}
    )
    assert lines == [f"[t] from-parent extra {tmp_path}", "[t] after-cat"]


def test_run_cmd_runs_the_child_in_its_own_process_group(ctx_factory):
    ctx, lines = ctx_factory()
    ctx.run_cmd([sys.executable, "-c", "import os; print(os.getpgid(0) == os.getpid())"])
    assert lines == ["[t] True"]


def test_sanitize_line():
    assert sanitize_line("\x1b[31mred\x1b[0m text\r\n") == "red text"
    assert sanitize_line("10%\r50%\r100%") == "100%"
    assert sanitize_line("bell\x07 and \x1b]0;title\x07done") == "bell and done"
    assert len(sanitize_line("x" * 10000)) == 4096


def test_cancel_kills_the_whole_process_group(ctx_factory):
    state = RunState()
    ctx, lines = ctx_factory(state)
    errors: list[BaseException] = []

    def target():
        try:
            ctx.run_cmd(["sh", "-c", "sleep 30 & echo pid=$!; wait"])
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    assert wait_until(lambda: any(line.startswith("[t] pid=") for line in lines))
    pid = int(next(line for line in lines if line.startswith("[t] pid="))[len("[t] pid=") :])
    t0 = time.monotonic()
    state.cancel.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert time.monotonic() - t0 < 5
    assert isinstance(errors[0], TaskFailed) and "cancelled" in str(errors[0])
    assert wait_until(lambda: not alive(pid))


# -- Ctrl-C on a real `gaia run` ----------------------------------------------------------

CLI_SCRIPT = textwrap.dedent(
    """
    import sys
    from gaia_core.cli import main
    from gaia_core.plugins import get_plugin_manager
    from gaia_core.testing import DemoPlugin

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(DemoPlugin(), name="demo")
    main(sys.argv[1:], pm)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_gaia_run_and_kills_children(gaia_demo_build, tmp_path, sig):
    path = gaia_demo_build(
        {
            "sleeper": {"cmd": ["sh", "-c", "sleep 30 & echo pid=$!; wait"]},
            "later": {"after": ["demo.sleeper"], "cmd": ["touch", "later-ran"]},
        }
    )
    script = tmp_path / "gaia_demo.py"
    script.write_text(CLI_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    with running([sys.executable, str(script), "run", str(path)], env=env) as proc:
        pid = None
        for line in proc.stdout:
            if line.startswith("[demo.sleeper] pid="):
                pid = int(line.strip().split("=", 1)[1])
                break
        assert pid is not None and alive(pid)
        out, err, elapsed = stopped(proc, sig)
    expected = ExitCode.TERMINATED if sig == signal.SIGTERM else ExitCode.INTERRUPTED
    assert proc.returncode == expected == (143 if sig == signal.SIGTERM else 130)
    assert elapsed < 8
    assert wait_until(lambda: not alive(pid))
    assert "interrupted" in err
    assert "  status: interrupted" in out
    assert "RUN: demo.later" not in out
    assert not (path.parent / "later-ran").exists()


def test_sigterm_ends_a_run_whose_task_is_blocked_in_python(gaia_demo_build, tmp_path):
    """A task stuck in a blocking call (a hung transfer) does not keep a cancelled run alive."""
    path = gaia_demo_build({"stuck": {"hang": 120, "log": ["blocking"]}})
    script = tmp_path / "gaia_demo.py"
    script.write_text(CLI_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    with running([sys.executable, str(script), "run", str(path)], env=env) as proc:
        for line in proc.stdout:
            if line.startswith("[demo.stuck] blocking"):
                break
        out, _, elapsed = stopped(proc)
    assert proc.returncode == ExitCode.TERMINATED
    assert elapsed < 5 + 1.5, elapsed
    assert "INTERRUPTED: demo.stuck did not stop" in out
