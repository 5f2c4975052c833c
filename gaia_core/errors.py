"""Errors and exit codes; every user-facing failure is a GaiaError rendered once by the CLI."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator


class ExitCode(enum.IntEnum):
    """Process exit codes of ``gaia``."""

    OK = 0
    #: a task failed, or a checkpoint upload still fails after ``retry``
    FAILED = 1
    #: bad command line or invalid configuration
    USAGE_ERROR = 2
    #: an unexpected exception (traceback with ``--debug``)
    INTERNAL_ERROR = 3
    #: a plugin failed to load or misbehaved
    PLUGIN_ERROR = 4
    #: a remote store could not be reached
    BACKEND_UNAVAILABLE = 5
    #: interrupted by Ctrl-C (SIGINT)
    INTERRUPTED = 130
    #: stopped by SIGTERM
    TERMINATED = 143


class GaiaError(Exception):
    exit_code = ExitCode.FAILED


class ConfigError(GaiaError):
    """Invalid configuration; carries every problem found, not only the first."""

    exit_code = ExitCode.USAGE_ERROR

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        lines = [f"{len(self.problems)} configuration problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class PlanError(GaiaError):
    exit_code = ExitCode.USAGE_ERROR


class PluginError(GaiaError):
    exit_code = ExitCode.PLUGIN_ERROR


class PluginMethodError(GaiaError):
    """An exception raised inside a plugin's code while gaia used it (exit 3).

    The message names the plugin, its distribution and the method (``plugin 'cmake'
    (gaia-cmake 1.0) failed in CMakeAnchor.targets(): KeyError: 'x'``); the original
    exception is ``__cause__``, whose traceback ``gaia --debug`` prints.
    """

    exit_code = ExitCode.INTERNAL_ERROR

    def __init__(self, plugin: str, method: str, error: BaseException, message: str | None = None):
        self.plugin = plugin
        self.method = method
        self.error = error
        super().__init__(f"{plugin} failed in {method}: {type(error).__name__}: {message or error}")


class TaskFailed(GaiaError):
    """Raised inside a task to fail it with a message (no traceback)."""


class CheckpointError(GaiaError):
    """A checkpoint could not be restored, captured or verified."""


class BackendError(GaiaError):
    """A remote store operation failed. Messages must never contain secrets."""

    exit_code = ExitCode.BACKEND_UNAVAILABLE


class ObjectNotFound(BackendError):
    """The remote store answered that the object does not exist."""


class ObjectExists(BackendError):
    """A create-only publish found the object already there (another writer won)."""


class BackendUnavailable(BackendError):
    """The remote did not answer in time, or refused the connection: skip it for this run.

    A store tier that raised it is also remembered as down for a while (on disk, per host
    and user), so that the next runs do not wait for it again; :class:`UnavailableHere`
    is not remembered."""


class UnavailableHere(BackendUnavailable):
    """The backend cannot be used in this environment, which costs no time to find out: an
    ``*_env`` variable is unset, a ``dir`` store is not mounted. Skipped for this run, never
    remembered as a dead tier (the next job may have the variable or the mount)."""


class ObjectInvalid(CheckpointError):
    """What a store holds under a key is no object: a FIFO, a device, a directory or a
    symbolic link (on the way or at the end) where a file should be. Refused without
    following or reading it, and treated like a corrupt object (a miss; replaced by the
    next good upload)."""


def exception_chain(
    exc: BaseException, wrapped: Callable[[BaseException], Iterable[object]] = lambda e: ()
) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, each once: causes, contexts, and what
    ``wrapped(e)`` names (a library's own wrapping, such as urllib3's ``reason``), so that a
    backend tells a refused connection from a timeout by type, never by message text."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__, *wrapped(current)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
