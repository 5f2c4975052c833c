"""``gaia checkpoints report``: one self-contained HTML page from the records of real runs of
the quickstart (the Buildroot test tree) on two machines sharing a ``dir`` tier, plus a
record a hostile writer put into that tier; read as text and rendered by chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from browser import render
from team_quickstart import team_quickstart

from gaia_core.checkpoints import recording

EVIL_HOST = "<script>document.title='pwned'</script>"
EVIL_REASON = 'inputs_changed:<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """Runs on two machines (a miss, a hit, a miss after an edit; a remote hit), a forged
    record in the tier, and the report of it all."""
    from click.testing import CliRunner

    from gaia_core.cli import make_cli
    from gaia_core.plugins import get_plugin_manager

    tmp = tmp_path_factory.mktemp("report")
    runner = CliRunner()

    def cli(*args: object) -> None:
        result = runner.invoke(make_cli(get_plugin_manager()), [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    shared = tmp / "team"
    shared.mkdir()
    ci = team_quickstart(tmp / "ci", shared)
    laptop = team_quickstart(tmp / "laptop", shared)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(recording, "host_name", lambda: "ci-runner-1")
        cli("run", ci)  # a miss: built, captured, uploaded
        shutil.rmtree(ci.parent / "build" / "buildroot" / "output", ignore_errors=True)
        cli("run", ci)  # a hit from the local store
        defconfig = ci.parent / "buildroot-tree" / "configs" / "gaia_qemu_defconfig"
        defconfig.write_text(defconfig.read_text() + "# a change\n")
        cli("run", ci)  # a miss: the defconfig changed
        mp.setattr(recording, "host_name", lambda: "laptop-ana")
        cli("run", laptop)  # a remote hit
    finally:
        mp.undo()
    [day] = (shared / "records").iterdir()
    record = json.loads(next(day.glob("*.json")).read_text())["records"][0]
    forged = {**record, "id": "f" * 32, "run": "e" * 32, "host": {"name": EVIL_HOST, "system": "</td><td>x"},
              "decision": "miss", "reason": EVIL_REASON, "explain": "<b>bold</b> & more", "tier": "<i>tier</i>",
              "stored": {"<svg onload=alert(1)>": 12345}}
    (day / ("e" * 32 + ".json")).write_text(json.dumps({"v": 1, "records": [forged]}))
    output = tmp / "report.html"
    cli("checkpoints", "report", ci, "-o", output, "--remote")
    return output


def test_the_page_is_one_file_that_loads_nothing(page):
    text = page.read_text()
    assert re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text) is None
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert csp.startswith("default-src &#x27;none&#x27;")


def test_every_value_from_a_record_is_escaped(page):
    text = page.read_text()
    assert text.count("<script>") == 1  # the page's own
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in text
    assert "<img" not in text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert "<b>bold</b>" not in text and "<i>tier</i>" not in text and "</td><td>x" not in text
    assert "<svg onload" not in text


def test_the_charts_hold_the_runs(page):
    text = page.read_text()
    hit_dots = re.findall(r'<circle class="dot s0"[^>]*data-value="([0-9.]+)"', text.split('id="time-saved"')[0])
    # one day: 2 hits of 5 runs (the forged miss among them); two if the runs crossed midnight UTC
    assert hit_dots == ["40"] or len(hit_dots) == 2
    assert 'id="store-size"' in text and "dir:team" in text
    assert "laptop-ana" in text and "ci-runner-1" in text
    assert "buildroot.source_dir (contents): changed configs/gaia_qemu_defconfig" in text


def test_chromium_renders_the_charts_offline_without_a_console_error(page, tmp_path):
    shown = render(page, tmp_path)
    assert shown.console == []  # no script error, no CSP violation, nothing blocked
    assert 'data-ready="1"' in shown.dom  # the page's script ran (its hash is in the CSP)
    assert shown.dom.count("<script") == 1
    svgs = re.findall(r"<svg[^>]*class=\"chart\".*?</svg>", shown.dom, flags=re.S)
    assert len(svgs) == 3
    assert all(re.search(r'data-value="[-0-9.e+]+"', svg) for svg in svgs)  # each chart drew its data
    assert re.search(r'<circle class="dot s0"[^>]*data-value="[0-9.]+"', svgs[0])
    assert re.search(r'<rect class="bar"[^>]*height="[0-9.]+"[^>]*data-value="[-0-9.e+]+"', svgs[1])
    assert len(re.findall(r'<circle class="dot', svgs[2])) >= 2  # local and dir:team sizes
    assert "&lt;script&gt;document.title=" in shown.dom and "<title>pwned" not in shown.dom
    png = shown.screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
