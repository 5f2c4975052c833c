"""``gaia checkpoints report``: one self-contained HTML page of what the cache did.

The page holds everything it shows: styles and its one small script inline, charts as
plain SVG drawn by :mod:`.svgchart`. Its Content-Security-Policy allows nothing to be
loaded (``default-src 'none'``) and only that script to run (by its sha256), so opening
it touches no network, and a script that a record somehow smuggled into the page would
not run either. The first defence is the escaping: every value from a record, shared
ones included (a host name ``<script>`` among them), is escaped where it is written.
"""

from __future__ import annotations

import base64
import collections
import hashlib
from datetime import UTC, datetime
from typing import Any

from gaia_core.checkpoints.shared import day_of
from gaia_core.checkpoints.stats import tier_samples
from gaia_core.checkpoints.svgchart import bar_chart, e, line_chart
from gaia_core.checkpoints.units import human_duration, human_size
from gaia_core.outcomes import HITS

#: misses listed in the table of recent misses
RECENT_MISSES = 15

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9cfdb}main{padding:18px 28px;max-width:1100px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:8px}
.card{background:#fff;border:1px solid #dfe3ea;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#5b6476;font-size:12px}
section{background:#fff;border:1px solid #dfe3ea;border-radius:8px;padding:12px 18px;margin:14px 0}
h2{font-size:16px;margin:2px 0 10px}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef2;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal}
th{cursor:pointer;color:#5b6476;font-weight:600;white-space:nowrap}td.num{text-align:right}
td.explain{color:#3d4556;max-width:420px;overflow-wrap:anywhere;white-space:normal}.tag{font-size:11px;padding:1px 6px;
border-radius:8px;background:#fde8e8;color:#a02020}.empty{color:#5b6476}
.chart text{font-size:11px;fill:#5b6476}.chart .grid{stroke:#eceef2}.bar{fill:#4c78a8}.bar.saved{fill:#54a24b}
.line{fill:none;stroke-width:2}.s0{stroke:#4c78a8;fill:#4c78a8}.s1{stroke:#f58518;fill:#f58518}
.s2{stroke:#54a24b;fill:#54a24b}.s3{stroke:#e45756;fill:#e45756}.s4{stroke:#72b7b2;fill:#72b7b2}
.s5{stroke:#b279a2;fill:#b279a2}polyline.line{fill:none}
"""

#: sorts a table by the column whose header is clicked (numbers by ``data-sort``)
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.dataset.down !== "1";
    th.dataset.down = down ? "1" : "0";
    rows.sort(function (a, b) {
      var x = a.cells[column], y = b.cells[column];
      var p = x.dataset.sort !== undefined ? parseFloat(x.dataset.sort) : x.textContent;
      var q = y.dataset.sort !== undefined ? parseFloat(y.dataset.sort) : y.textContent;
      return (p < q ? -1 : p > q ? 1 : 0) * (down ? -1 : 1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
document.body.dataset.ready = "1";
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; img-src data:"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _days(since: float, until: float) -> list[str]:
    days = []
    moment = since
    while day_of(moment) <= day_of(until):
        if day_of(moment) not in days:
            days.append(day_of(moment))
        moment += 86400
    return days


def _per_day(records: list[dict[str, Any]], days: list[str]) -> dict[str, Any]:
    runs = collections.Counter()
    hits = collections.Counter()
    saved: collections.Counter[str] = collections.Counter()
    for r in records:
        if r["decision"] == "inactive":
            continue
        day = day_of(r["t"])
        runs[day] += 1
        if r["decision"] in HITS:
            hits[day] += 1
            saved[day] += r["saved_seconds"] or 0.0
    return {"rate": [hits[d] / runs[d] * 100 if runs[d] else None for d in days],
            "runs": [runs[d] for d in days], "hits": [hits[d] for d in days],
            "saved": [saved[d] / 3600 for d in days]}


def _sizes_per_day(records: list[dict[str, Any]], days: list[str], now_sizes: dict[str, int | None],
                   local_host: str | None) -> dict[str, list[float | None]]:
    """Per tier, its size at the end of each day as the records saw it (carried over days
    without a sample); today's point is the size measured now when there is one."""
    last: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for tier, samples in tier_samples(records, local_host).items():
        for t, size in samples:
            last[tier][day_of(t)] = size
    series: dict[str, list[float | None]] = {}
    for tier in dict.fromkeys([*last, *(t for t, s in now_sizes.items() if s is not None)]):
        known: float | None = None
        points: list[float | None] = []
        for day in days:
            if day in last.get(tier, {}):
                known = last[tier][day] / (1 << 20)
            points.append(known)
        if now_sizes.get(tier) is not None and points:
            points[-1] = (now_sizes[tier] or 0) / (1 << 20)
        series[tier] = points
    return series


def _mib(value: float) -> str:
    return human_size(value * (1 << 20))


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(value: object, *, sort: float | None = None, cls: str = "") -> str:
    attrs = (f' data-sort="{sort:g}"' if sort is not None else "") + (f' class="{cls}"' if cls else "")
    return f"<td{attrs}>{e(value)}</td>"


def _when(at: str) -> str:
    try:
        return datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return at


def render(stats: dict[str, Any], records: list[dict[str, Any]], *, title: str, since: float,
           tier_sizes: dict[str, int | None], local_host: str | None = None) -> str:
    """The page; ``records``: those of the window, oldest first (each with ``t``);
    ``local_host``: the machine whose local store ``tier_sizes`` measured."""
    days = _days(since, stats["until"])
    daily = _per_day(records, days)
    sizes = _sizes_per_day(records, days, tier_sizes, local_host)
    evicted = {(r["at"], r["host"], r["point"]) for r in stats["evicted"]}
    misses = [r for r in records if r["decision"] in ("miss", "refused")][-RECENT_MISSES:][::-1]
    miss_rows = [[_td(_when(r["at"]), sort=r["t"]), _td(r["host"]["name"]), _td(r["point"]), _td(r["decision"]),
                  _td(r["reason"], cls="wrap"), _td(r["explain"] or "-", cls="explain"),
                  "<td>" + ('<span class="tag">evicted</span>' if (r["at"], r["host"]["name"], r["point"]) in evicted
                            else "") + "</td>"] for r in misses]
    host_rows = [[_td(name), _td(h["system"]), _td(h["runs"], sort=h["runs"], cls="num"),
                  _td(_percent(h["hit_rate"]), sort=h["hit_rate"] or 0, cls="num"),
                  _td(human_duration(h["saved_seconds"]), sort=h["saved_seconds"], cls="num"),
                  _td(_when(h["last_seen"] or ""))] for name, h in stats["hosts"].items()]
    slow_rows = [[_td(f"{r['seconds']:.1f}s", sort=r["seconds"], cls="num"), _td(r["point"]), _td(r["host"]),
                  _td(r["tier"] or "-"), _td(_when(r["at"]))] for r in stats["slowest_restores"]]
    point_rows = [[_td(pid), _td(p["runs"], sort=p["runs"], cls="num"),
                   _td(_percent(p["hit_rate"]), sort=p["hit_rate"] or 0, cls="num"),
                   _td(p["remote_hits"], sort=p["remote_hits"], cls="num"),
                   _td(p["misses"], sort=p["misses"], cls="num"), _td(p["evicted_misses"], cls="num"),
                   _td(human_duration(p["saved_seconds"]), sort=p["saved_seconds"], cls="num")]
                  for pid, p in stats["points"].items()]
    tiers = ", ".join(f"{t} {human_size(v['bytes'])}" for t, v in stats["tiers"].items() if v["bytes"] is not None)
    cards = [("hit rate", _percent(stats["hit_rate"])), ("build time saved", human_duration(stats["saved_seconds"])),
             ("runs", str(stats["runs"])), ("misses", f"{stats['misses']} ({len(stats['evicted'])} evicted)"),
             ("hosts", str(stats["hosts_seen"]))]
    period = f"{day_of(since)} to {day_of(stats['until'])}"
    hit_chart = line_chart("hit rate per day", days, {"hit rate": daily["rate"]}, y_max=100,
                           y_format=lambda v: f"{v:.0f}%",
                           tooltip=lambda _n, day, v: f"{day}: {v:.0f}% of "
                                                      f"{daily['runs'][days.index(day)]} runs hit")
    saved_chart = bar_chart("time saved per day", days, daily["saved"], y_format=lambda v: f"{v:.1f}h",
                            tooltip=lambda day, v: f"{day}: {human_duration(v * 3600)} saved")
    size_chart = line_chart("store size per tier", days, sizes, y_format=_mib,
                            tooltip=lambda tier, day, v: f"{tier} on {day}: {_mib(v)}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(_csp())}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_STYLE}</style></head>
<body><header><h1>{e(title)}</h1><p>{e(period)}: {stats['runs']} runs on {stats['hosts_seen']} host(s)
{('; stored: ' + e(tiers)) if tiers else ''}</p></header><main>
<div class="cards">{''.join(f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>' for k, v in cards)}</div>
<section id="hit-rate"><h2>Hit rate per day</h2>{hit_chart}</section>
<section id="time-saved"><h2>Time saved per day</h2>{saved_chart}</section>
<section id="store-size"><h2>Store size per tier</h2>{size_chart}</section>
<section id="points"><h2>Points</h2>{_table(["point", "runs", "hit rate", "remote hits", "misses", "evicted",
                                              "saved"], point_rows, "no runs in this period")}</section>
<section id="misses"><h2>Recent misses</h2>{_table(["when", "host", "point", "decision", "reason", "what differed",
                                                    ""], miss_rows, "no miss in this period")}</section>
<section id="hosts"><h2>Hosts</h2>{_table(["host", "system", "runs", "hit rate", "saved", "last seen"], host_rows,
                                          "no host ran in this period")}</section>
<section id="slowest"><h2>Slowest restores</h2>{_table(["seconds", "point", "host", "tier", "when"], slow_rows,
                                                        "no restore in this period")}</section>
</main><script>{_SCRIPT}</script></body></html>
"""


__all__ = ["RECENT_MISSES", "render"]
