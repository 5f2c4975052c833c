"""``gaia run --summary-file`` (a Markdown table appended, as GitHub's ``$GITHUB_STEP_SUMMARY``
collects) and ``--metrics-file`` (OpenMetrics text replaced at once, read back with
prometheus_client's own parser), from real runs of the counter project."""

from __future__ import annotations

import shutil

import pytest
from counter_project import run
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gaia_core.outcomes import Outcome, markdown_table, openmetrics


def families(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_the_summary_table_is_appended_per_run(gaia_cli, pm, project, tmp_path):
    summary = tmp_path / "step-summary.md"
    summary.write_text("## earlier step\n\n")
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build, "--summary-file", summary)
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build, "--summary-file", summary)
    text = summary.read_text()
    assert text.startswith("## earlier step\n")  # appended, never replaced
    assert text.count("| point | decision | reason | tier | bytes | time | saved |") == 2
    assert "| base | miss | missing | - | new " in text
    assert "| base | hit | - | local | - | restore " in text
    assert "Run ok in " in text and "1 of 1 checkpoint(s) used" in text


def test_metrics_of_a_miss_then_a_hit(gaia_cli, pm, project, tmp_path):
    metrics = tmp_path / "textfile" / "gaia.prom"
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build, "--metrics-file", metrics)
    first = families(metrics.read_text())
    assert [(s.labels, s.value) for s in first["gaia_checkpoint_misses"]] == [
        ({"point": "base", "reason": "missing"}, 1)]
    assert first["gaia_checkpoint_hits"] == []
    moved = {s.labels["direction"]: s.value for s in first["gaia_checkpoint_moved_bytes"]}
    assert moved["capture"] > 0 and moved["download"] == 0
    steps = {s.labels["step"] for s in first["gaia_checkpoint_step_seconds"]}
    assert {"restore", "capture", "build"} <= steps
    assert first["gaia_run_success"][0].value == 1
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build, "--metrics-file", metrics)
    second = families(metrics.read_text())  # replaced, not appended: one run's values
    assert [(s.labels, s.value) for s in second["gaia_checkpoint_hits"]] == [({"point": "base", "tier": "local"}, 1)]
    assert second["gaia_checkpoint_misses"] == []
    assert len(second["gaia_checkpoint_saved_seconds"]) == 1
    assert [p.name for p in metrics.parent.iterdir()] == ["gaia.prom"]  # no temporary left for the collector


def test_a_failed_run_still_writes_both(gaia_cli, pm, project, tmp_path):
    project.write(value="a", fail_consume=True)
    run(gaia_cli, pm, "run", project.build, "--summary-file", tmp_path / "s.md", "--metrics-file",
        tmp_path / "m.prom", code=1)
    assert "Run failed in " in (tmp_path / "s.md").read_text()
    assert families((tmp_path / "m.prom").read_text())["gaia_run_success"][0].value == 0


def test_an_unwritable_summary_is_a_warning_not_a_failure(gaia_cli, pm, project, tmp_path):
    project.write(value="a")
    (tmp_path / "file").write_text("a file where a directory should be")
    result = run(gaia_cli, pm, "run", project.build, "--summary-file", tmp_path / "file" / "s.md", "--metrics-file",
                 tmp_path / "m.prom")
    assert f"WARN: could not write {tmp_path / 'file' / 's.md'}" in result.output
    assert (tmp_path / "m.prom").exists()


def test_a_dry_run_writes_neither(gaia_cli, pm, project, tmp_path):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build, "--dry-run", "--summary-file", tmp_path / "s.md", "--metrics-file",
        tmp_path / "m.prom")
    assert not (tmp_path / "s.md").exists() and not (tmp_path / "m.prom").exists()


HOSTILE = Outcome(point="base", decision="refused", reason='not_relocatable:a|b <script>"x"\\\nnext',
                  tier="s3:[cache](http://example.invalid)", downloaded=5, seconds={"restore": 1.5})


def test_markdown_cells_are_escaped():
    table = markdown_table([HOSTILE], title="gaia run <b>", status="ok", elapsed=3)
    row = [line for line in table.splitlines() if line.startswith("| base")][0]
    assert row.count(" | ") == 6  # seven cells: no value opened a column
    assert "<script>" not in table and "&lt;script&gt;" in table and "<b>" not in table
    assert "a\\|b" in row and "\\[cache\\]" in row and "\n" not in row


def test_openmetrics_label_values_are_escaped_and_parse():
    text = openmetrics([HOSTILE], ok=True, elapsed=3.0)
    assert text.endswith("# EOF\n")
    [sample] = families(text)["gaia_checkpoint_refused"]
    assert sample.labels["reason"] == HOSTILE.reason and sample.value == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_value_that_is_no_number_is_refused(value):
    with pytest.raises(ValueError):
        openmetrics([Outcome(point="p", decision="hit", seconds={"restore": value})], ok=True, elapsed=1)
