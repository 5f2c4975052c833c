"""What a run's checkpoints did, for CI: a Markdown step summary and OpenMetrics text.

A feature reports one :class:`Outcome` per unit it decided about (the checkpoints plugin:
one per point) from ``gaia_run_finished``; ``gaia run --summary-file`` appends
:func:`markdown_table` to the file (GitHub's ``$GITHUB_STEP_SUMMARY``, a GitLab job
summary), ``--metrics-file`` replaces the file with :func:`openmetrics` at once (a
node-exporter textfile collector never reads half a file). Every value is text from the
run's own decisions, escaped for the format it goes into: a reason may hold ``|`` or ``<``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gaia_core import atomic
from gaia_core.checkpoints.units import human_size
from gaia_core.run import format_elapsed

#: decisions that used a stored object
HITS = ("hit", "remote_hit")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one checkpoint point came to in a run."""

    point: str
    #: ``hit`` (local store or tree in place), ``remote_hit``, ``miss``, ``refused`` (an object
    #: was there but not used: untrusted, not usable at this path, corrupt) or ``inactive``
    decision: str
    #: why (``inputs_changed:buildroot.packages``, ``untrusted:unsigned``); ``hit`` on a hit
    reason: str = ""
    #: where the object came from or was refused (``local``, ``workspace``, ``s3:cache``)
    tier: str | None = None
    fingerprint: str | None = None
    downloaded: int = 0
    uploaded: int = 0
    #: new bytes a capture stored
    captured: int = 0
    #: step -> seconds: ``restore``, ``download``, ``capture``, ``upload``, ``build``
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    #: on a hit: the build time recorded with the object, less the restore's
    saved_seconds: float | None = None

    @property
    def hit(self) -> bool:
        return self.decision in HITS


# -- Markdown -----------------------------------------------------------------------------


def _md(text: object) -> str:
    """A table cell: no line break, no column break, no HTML (GitHub renders HTML in summaries)."""
    value = " ".join(str(text).split())
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\\", "\\\\"), ("|", "\\|"),
                         ("`", "\\`"), ("[", "\\["), ("]", "\\]")):
        value = value.replace(raw, escaped)
    return value or "-"


def _time_cell(outcome: Outcome) -> str:
    steps = [f"{step} {format_elapsed(s)}" for step, s in outcome.seconds.items()]
    return ", ".join(steps) or "-"


def _moved_cell(outcome: Outcome) -> str:
    parts = [f"{label} {human_size(n)}" for label, n in (("down", outcome.downloaded), ("up", outcome.uploaded),
                                                          ("new", outcome.captured)) if n]
    return ", ".join(parts) or "-"


def markdown_table(outcomes: Sequence[Outcome], *, title: str, status: str, elapsed: float) -> str:
    """A heading, one line of totals and a table of each point's decision."""
    hits = sum(o.hit for o in outcomes)
    saved = sum(o.saved_seconds or 0 for o in outcomes)
    lines = [f"### {_md(title)}", "",
             f"Run {_md(status)} in {format_elapsed(elapsed)}: {hits} of {len(outcomes)} checkpoint(s) used"
             + (f", about {format_elapsed(saved)} of build time saved" if saved else "") + ".", ""]
    if outcomes:
        lines += ["| point | decision | reason | tier | bytes | time | saved |",
                  "| --- | --- | --- | --- | ---: | --- | ---: |"]
        for o in outcomes:
            saved_cell = format_elapsed(o.saved_seconds) if o.saved_seconds else "-"
            reason = "" if o.reason == o.decision else o.reason
            lines.append(f"| {_md(o.point)} | {_md(o.decision)} | {_md(reason)} | {_md(o.tier or '')} | "
                         f"{_md(_moved_cell(o))} | {_md(_time_cell(o))} | {_md(saved_cell)} |")
    return "\n".join(lines) + "\n\n"


def append_summary(path: Path, text: str) -> None:
    """Append ``text`` (a CI step summary collects what every step appends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


# -- OpenMetrics --------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class _Families:
    """Metric families in the order first declared, each with its samples."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, str | None, list[str]]] = {}

    def declare(self, name: str, kind: str, help_text: str, unit: str | None = None) -> None:
        self.families[name] = (kind, help_text, unit, [])

    def add(self, name: str, value: float, **labels: str) -> None:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        self.families[name][3].append(f"{name}{{{rendered}}} {_number(value)}" if labels else
                                      f"{name} {_number(value)}")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, unit, samples) in self.families.items():
            lines.append(f"# TYPE {name} {kind}")
            if unit:
                lines.append(f"# UNIT {name} {unit}")
            lines.append(f"# HELP {name} {help_text}")
            lines += samples
        return "\n".join([*lines, "# EOF"]) + "\n"


def openmetrics(outcomes: Iterable[Outcome], *, ok: bool, elapsed: float, finished: float | None = None) -> str:
    """The run as gauges (each run replaces the file, so every value is the last run's)."""
    m = _Families()
    m.declare("gaia_run_success", "gauge", "1 when the last gaia run succeeded, else 0.")
    m.declare("gaia_run_duration_seconds", "gauge", "How long the last gaia run took.", "seconds")
    m.declare("gaia_run_timestamp_seconds", "gauge", "When the last gaia run ended (Unix time).", "seconds")
    m.declare("gaia_checkpoint_hits", "gauge", "Points whose checkpoint was used in the last run, by tier.")
    m.declare("gaia_checkpoint_misses", "gauge", "Points built in the last run, by the reason of the miss.")
    m.declare("gaia_checkpoint_refused", "gauge", "Points whose stored object was not used, by why.")
    m.declare("gaia_checkpoint_moved_bytes", "gauge", "Bytes a point's checkpoint moved in the last run.", "bytes")
    m.declare("gaia_checkpoint_step_seconds", "gauge", "Seconds each checkpoint step took in the last run.",
              "seconds")
    m.declare("gaia_checkpoint_saved_seconds", "gauge", "Estimated build time a hit saved in the last run.",
              "seconds")
    m.add("gaia_run_success", 1 if ok else 0)
    m.add("gaia_run_duration_seconds", round(elapsed, 3))
    m.add("gaia_run_timestamp_seconds", round(time.time() if finished is None else finished, 3))
    for o in outcomes:
        if o.hit:
            m.add("gaia_checkpoint_hits", 1, point=o.point, tier=o.tier or "")
        elif o.decision == "miss":
            m.add("gaia_checkpoint_misses", 1, point=o.point, reason=o.reason)
        elif o.decision == "refused":
            m.add("gaia_checkpoint_refused", 1, point=o.point, reason=o.reason, tier=o.tier or "")
        for direction, n in (("download", o.downloaded), ("upload", o.uploaded), ("capture", o.captured)):
            m.add("gaia_checkpoint_moved_bytes", n, point=o.point, direction=direction)
        for step, seconds in o.seconds.items():
            m.add("gaia_checkpoint_step_seconds", round(seconds, 3), point=o.point, step=step)
        if o.saved_seconds is not None:
            m.add("gaia_checkpoint_saved_seconds", round(o.saved_seconds, 3), point=o.point)
    return m.text()


def write_metrics(path: Path, text: str) -> None:
    """Replace ``path`` at once: a collector reads the old file or the whole new one."""
    atomic.write_bytes(path, text.encode())


__all__ = ["HITS", "Outcome", "append_summary", "markdown_table", "openmetrics", "write_metrics"]
