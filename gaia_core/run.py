"""The executor: run a plan's tasks in order (or N at a time), stream their output, log each.

Every task writes ``<run dir>/logs/<task id>.log``. A task's commands run in their own
process group, so Ctrl-C (SIGINT) or SIGTERM can stop the whole subtree: the run sets
``state.cancel``, every running command's group gets SIGTERM then SIGKILL, no new task
starts and the run ends as interrupted.

Commands inherit gaia's environment minus the variables that hold gaia's own secrets
(``gaia_secret_env_vars``: a remote store's credentials, the signing key's path): a
package's build script must not be able to read the store's write credentials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gaia_core.errors import ExitCode, GaiaError, TaskFailed

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.outcomes import Outcome
    from gaia_core.plan import Plan
    from gaia_core.tasks import Task

Echo = Callable[[str], Any]

#: seconds between SIGTERM and SIGKILL when a command is cancelled
KILL_GRACE_SECONDS = 3.0
#: seconds a cancelled run waits for its running tasks before it ends without them; tasks
#: that move data check ``state.cancel`` between chunks, and commands get SIGTERM then
#: SIGKILL within KILL_GRACE_SECONDS, so a run ends within about 5 s of Ctrl-C or SIGTERM
CANCEL_GRACE_SECONDS = 4.0
#: longest line kept from a command's output (longer lines are cut)
MAX_LINE = 4096
#: bytes read at most per line, so a command that never prints a newline stays bounded
_READ_CHUNK = 16 * 1024

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def sanitize_line(text: str) -> str:
    """A terminal line as plain text: ANSI escapes and control characters removed."""
    text = text.rstrip("\r\n")
    if "\r" in text:  # progress bars: keep what was drawn last
        text = next((part for part in reversed(text.split("\r")) if part.strip()), "")
    text = _CONTROL.sub("", _ANSI.sub("", text)).replace("\t", "    ")
    return text[:MAX_LINE].rstrip()


@dataclasses.dataclass
class RunState:
    """Shared by the tasks of one run."""

    #: task id -> reason; such a task is not run when its turn comes, and counts as done
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    #: anything tasks hand to each other
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: set on Ctrl-C/SIGTERM; running commands are killed, no new task starts
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: the signal that cancelled the run (SIGINT or SIGTERM), for the exit code
    cancel_signal: int | None = None
    #: ``--quiet``: tasks show no progress of long transfers
    quiet: bool = False
    #: variables kept out of every command's environment (``gaia_secret_env_vars``)
    withheld_env: frozenset[str] = frozenset()
    #: task id -> seconds it ran (set when it ends, before its dependents start)
    task_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[int, str] = {}

    def _add_child(self, pid: int, task_id: str) -> None:
        with self._lock:
            self._children[pid] = task_id

    def _remove_child(self, pid: int) -> None:
        with self._lock:
            self._children.pop(pid, None)

    def kill_children(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group of every command still running."""
        with self._lock:
            pids = list(self._children)
        for pid in pids:
            _killpg(pid, sig)


class TaskContext:
    """What a task function receives."""

    def __init__(
        self, task: Task, build: Build, *, dry_run: bool, state: RunState, echo: Echo, log_file: IO[str] | None = None
    ):
        self.task = task
        self.build = build
        self.dry_run = dry_run
        self.state = state
        self._echo = echo
        self._log_file = log_file

    def log(self, msg: str) -> None:
        """``[task id] msg`` on the terminal and in the task's log file."""
        for line in str(msg).splitlines() or [""]:
            self._emit(line)

    def _emit(self, line: str) -> None:
        self._echo(f"[{self.task.id}] {line}")
        if self._log_file is not None:
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def run_cmd(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Run a command, streaming its output; a non-zero exit raises :class:`TaskFailed`.

        ``env`` is merged over :meth:`command_env` (the current environment without
        gaia's secrets). stdin is /dev/null. The command runs in its own process group,
        killed when the run is cancelled.
        """
        args = [os.fspath(a) for a in argv]
        shown = shlex.join(args)
        if self.dry_run:
            self.log(f"DRY-RUN: {shown}")
            return
        if self.state.cancel.is_set():
            raise TaskFailed("cancelled")
        full_env = self.command_env(env)
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise TaskFailed(f"cannot start {args[0]!r}: {exc.strerror or exc}") from None
        self.state._add_child(proc.pid, self.task.id)
        finished = threading.Event()
        watcher = threading.Thread(target=self._watch_cancel, args=(proc, finished), daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            for raw in iter(lambda: proc.stdout.readline(_READ_CHUNK), b""):
                line = sanitize_line(raw.decode("utf-8", errors="replace"))
                if line:
                    self._emit(line)
            returncode = proc.wait()
        finally:
            finished.set()
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.poll() is None:  # an exception while reading: do not leave it running
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.state._remove_child(proc.pid)
            watcher.join()
        if self.state.cancel.is_set():
            raise TaskFailed(f"cancelled: {shown}")
        if returncode != 0:
            how = f"exit {returncode}" if returncode > 0 else f"killed by {_signal_name(-returncode)}"
            raise TaskFailed(f"command failed ({how}): {shown}")

    def command_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command: gaia's own without the withheld variables
        (``state.withheld_env``), with ``env`` merged over it. For a task that must start
        a process itself."""
        full_env = {k: v for k, v in os.environ.items() if k not in self.state.withheld_env}
        if env:
            full_env.update({k: os.fspath(v) if isinstance(v, os.PathLike) else str(v) for k, v in env.items()})
        return full_env

    def _watch_cancel(self, proc: subprocess.Popen[bytes], finished: threading.Event) -> None:
        while not finished.wait(0.1):
            if self.state.cancel.is_set():
                _terminate_group(proc)
                return


def _terminate_group(proc: subprocess.Popen[bytes]) -> None:
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    # whatever is left of the group (children that ignored SIGTERM)
    _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# -- executor ---------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    #: task id -> "ok" | "failed" | "skipped" | "not-run" | "dry-run" | "interrupted"
    statuses: dict[str, str]
    errors: dict[str, str]
    logs: dict[str, Path]
    elapsed: float
    interrupted: bool = False
    dry_run: bool = False
    #: SIGTERM ends a run with 143, Ctrl-C with 130
    signal: int | None = None
    #: what features decided (``gaia_run_finished``): one per checkpoint point
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.errors

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.TERMINATED if self.signal == signal.SIGTERM else ExitCode.INTERRUPTED
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def execute(
    plan: Plan,
    build: Build,
    *,
    dry_run: bool = False,
    max_parallel: int = 1,
    echo: Echo | None = None,
    state: RunState | None = None,
) -> RunResult:
    """Run ``plan``; ``max_parallel`` tasks at a time (0 = CPU count). Never raises for a task failure."""
    echo = _locked(echo or _print)
    state = state or RunState()
    state.withheld_env = state.withheld_env | secret_variables(build)
    if dry_run:
        return _dry_run(plan, echo)
    workers = max_parallel if max_parallel > 0 else (os.cpu_count() or 1)
    with _cancel_on_signals(state):
        result = _Scheduler(plan, build, state, echo, workers).run()
    result.outcomes = run_finished(build, state, result, echo)
    return result


def run_finished(build: Build, state: RunState, result: RunResult, echo: Echo) -> list[Outcome]:
    """Every plugin's ``gaia_run_finished``; a failing one is a warning, never the run's failure."""
    try:
        found = build.registry.pm.hook.gaia_run_finished(build=build, state=state, result=result)
    except Exception as exc:  # records and summaries are worth less than the run they describe
        echo(f"WARN: recording the run failed: {exc}")
        return []
    return [outcome for outcomes in found for outcome in outcomes or ()]


def secret_variables(build: Build) -> frozenset[str]:
    """The variables every plugin's ``gaia_secret_env_vars`` names for this build."""
    found = build.registry.pm.hook.gaia_secret_env_vars(build=build)
    return frozenset(name for names in found for name in names or ())


def _dry_run(plan: Plan, echo: Echo) -> RunResult:
    for task in plan.order:
        echo(f"DRY-RUN: {task.id} ({task.module}/{task.phase})")
    result = RunResult({t.id: "dry-run" for t in plan.order}, {}, {}, 0.0, dry_run=True)
    echo(f"DRY-RUN: {len(plan.order)} tasks planned; nothing was run or written")
    return result


@dataclasses.dataclass
class _Finished:
    task_id: str
    error: str | None
    elapsed: float


class _Scheduler:
    """Starts a task once all its dependencies are done, up to ``workers`` at a time."""

    def __init__(self, plan: Plan, build: Build, state: RunState, echo: Echo, workers: int):
        self.plan = plan
        self.build = build
        self.state = state
        self.echo = echo
        self.workers = workers
        self.log_dir = build.run_dir / "logs"
        self.statuses = {t.id: "not-run" for t in plan.order}
        self.errors: dict[str, str] = {}
        self.logs: dict[str, Path] = {}
        self.waiting = {tid: len(deps) for tid, deps in plan.deps.items()}
        self.dependents = plan.dependents()
        self.ready = [tid for tid, n in self.waiting.items() if n == 0]
        heapq.heapify(self.ready)
        self.done: queue.Queue[_Finished] = queue.Queue()
        self.running: set[str] = set()

    def run(self) -> RunResult:
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cancelled_at: float | None = None
        while True:
            stopping = bool(self.errors) or self.state.cancel.is_set()
            if self.state.cancel.is_set() and cancelled_at is None:
                cancelled_at = time.monotonic()
                self.echo("INTERRUPTED: stopping running tasks, starting no new ones")
            while not stopping and self.ready and len(self.running) < self.workers:
                self._start(heapq.heappop(self.ready))
            if not self.running:
                break
            if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_SECONDS:
                for tid in sorted(self.running):
                    self.echo(f"INTERRUPTED: {tid} did not stop within {CANCEL_GRACE_SECONDS:.0f}s; leaving it")
                    self.statuses[tid] = "interrupted"
                break
            try:
                finished = self.done.get(timeout=0.1)
            except queue.Empty:
                continue
            self._finish(finished)
        result = RunResult(
            self.statuses, self.errors, self.logs, time.monotonic() - started, interrupted=self.state.cancel.is_set(),
            signal=self.state.cancel_signal,
        )
        for line in summary_lines(result):
            self.echo(line)
        return result

    def _start(self, task_id: str) -> None:
        task = self.plan.tasks[task_id]
        log_path = self.log_dir / f"{_safe_name(task_id)}.log"
        self.logs[task_id] = log_path
        reason = self.state.skipped.get(task_id)
        if reason is not None:
            log_path.write_text(f"skipped: {reason}\n")
            self.statuses[task_id] = "skipped"
            self.echo(f"SKIP: {task_id} ({reason})")
            self._release(task_id)
            return
        self.echo(f"RUN: {task_id}")
        self.running.add(task_id)
        worker = threading.Thread(
            target=self._run_task, args=(task, log_path), name=f"gaia-task-{task_id}", daemon=True
        )
        worker.start()

    def _run_task(self, task: Task, log_path: Path) -> None:
        t0 = time.monotonic()
        error: str | None = None
        with open(log_path, "w", encoding="utf-8") as log_file:
            ctx = TaskContext(task, self.build, dry_run=False, state=self.state, echo=self.echo, log_file=log_file)
            try:
                if task.run is not None:
                    task.run(ctx)
            except GaiaError as exc:
                error = str(exc) or type(exc).__name__
                if exc.exit_code == ExitCode.INTERNAL_ERROR:  # a plugin's bug: its traceback helps
                    log_file.write(traceback.format_exc())
            except BaseException as exc:  # a task bug must not kill the run silently
                error = f"{type(exc).__name__}: {exc}"
                log_file.write(traceback.format_exc())
            elapsed = time.monotonic() - t0
            self.state.task_seconds[task.id] = elapsed
            log_file.write(
                f"{'FAIL' if error else 'DONE'} ({format_elapsed(elapsed)}){': ' + error if error else ''}\n"
            )
        self.done.put(_Finished(task.id, error, elapsed))

    def _finish(self, finished: _Finished) -> None:
        tid = finished.task_id
        self.running.discard(tid)
        if finished.error is None:
            self.statuses[tid] = "ok"
            self.echo(f"DONE: {tid} ({format_elapsed(finished.elapsed)})")
            self._release(tid)
        else:
            self.statuses[tid] = "failed"
            self.errors[tid] = finished.error
            self.echo(f"FAIL: {tid} ({format_elapsed(finished.elapsed)}) {finished.error}")

    def _release(self, task_id: str) -> None:
        for child in self.dependents[task_id]:
            self.waiting[child] -= 1
            if self.waiting[child] == 0:
                heapq.heappush(self.ready, child)


def summary_lines(result: RunResult) -> list[str]:
    status = "interrupted" if result.interrupted else ("ok" if result.ok else "failed")
    lines = [
        "SUMMARY:",
        f"  status: {status}",
        f"  tasks: ok={result.count('ok')} failed={result.count('failed')} "
        f"skipped={result.count('skipped')} not-run={result.count('not-run')}",
        f"  elapsed: {format_elapsed(result.elapsed)}",
    ]
    if result.errors:
        lines.append(f"  failed_tasks: {', '.join(result.errors)}")
        lines.append("  logs:")
        lines += [f"    {result.logs[tid]}" for tid in result.errors]
    return lines


def format_elapsed(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _safe_name(task_id: str) -> str:
    """Task ids are dotted names; keep them readable but never a path."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id).lstrip(".") or "_"


def _print(line: str) -> None:
    print(line, flush=True)


def _locked(echo: Echo) -> Echo:
    lock = threading.Lock()

    def locked_echo(line: str) -> None:
        with lock:
            echo(line)

    return locked_echo


@contextlib.contextmanager
def _cancel_on_signals(state: RunState) -> Iterator[None]:
    """In the main thread: the first SIGINT/SIGTERM cancels the run, a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if state.cancel.is_set():
            state.kill_children(signal.SIGKILL)
            raise KeyboardInterrupt
        state.cancel_signal = signum
        state.cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        state.cancel.set()
        state.kill_children(signal.SIGKILL)
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["RunResult", "RunState", "TaskContext", "execute", "format_elapsed", "sanitize_line", "summary_lines"]
