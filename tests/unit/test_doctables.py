"""The generated tables in docs/ match the code, and the generator reads the real definitions."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from sse_audit_proxy.cli import main as cli
from sse_audit_proxy.tools import doctables

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_no_generated_table_in_docs_is_stale() -> None:
    stale = [str(p.relative_to(ROOT)) for p in doctables.stale(DOCS)]
    assert not stale, f"stale generated tables in {stale}: run `{doctables.COMMAND}`"


def test_every_table_kind_is_used_and_every_command_has_its_flags_in_the_docs() -> None:
    names = {m["name"] for p in doctables.pages(DOCS) for m in doctables.BLOCK.finditer(p.read_text())}
    commands = {name.removeprefix("flags ") for name in names if name.startswith("flags ")}
    assert commands == set(doctables.command_parsers())
    assert {"scenarios", "verdicts"} <= names


def test_the_generator_knows_the_same_commands_as_the_entry_point() -> None:
    # The entry point sits above the tools layer, so the generator keeps its own list.
    assert doctables.COMMANDS == cli.COMMANDS
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    for name, parser in doctables.command_parsers().items():
        real = sub.choices[name]
        assert [a.option_strings for a in parser._actions] == [a.option_strings for a in real._actions]


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].split("`")[1].split(" ")[0]] = cells
    return rows


def test_the_serve_table_has_every_flag_with_its_variable_and_default() -> None:
    parser = doctables.command_parsers()["serve"]
    rows = _rows(doctables.flag_table(parser))
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(rows) == len(flags) >= 40
    for action in flags:
        long = next(o for o in action.option_strings if o.startswith("--"))  # a switch: not its --no-
        _, env, default, meaning = rows[long]
        assert env == f"`SSE_AUDIT_{action.dest.upper()}`"
        assert "[env:" not in meaning and "(default:" not in meaning and meaning
        if action.required:
            assert default == "required"
        elif action.nargs == 0:
            assert default == "off"
        elif action.default is None:
            assert default == ""
    assert rows["--idle-timeout"][2] == "`300.0`"
    assert rows["--max-body-bytes"][2] == "`512m`"  # 512 << 20, written as a person would
    assert rows["--max-frame-bytes"][2] == "`1m`"
    assert rows["--log-format"][2] == "`json`"


def test_the_environment_of_the_shell_does_not_leak_into_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = doctables.flag_table(doctables.command_parsers()["serve"])
    monkeypatch.setenv("SSE_AUDIT_PORT", "9999")
    monkeypatch.setenv("SSE_AUDIT_CANARY_GUARD", "1")
    assert doctables.flag_table(doctables.command_parsers()["serve"]) == clean
    assert os.environ["SSE_AUDIT_PORT"] == "9999"  # and the variables are given back


def test_a_tool_table_has_no_environment_column_and_keeps_hand_written_defaults() -> None:
    rows = _rows(doctables.flag_table(doctables.command_parsers()["demo"]))
    assert len(rows["--duration"]) == 3
    assert rows["--duration"][1] == "until Ctrl-C"
    assert rows["--rate"][1] == "`4`"
    assert rows["--mix"][1].startswith("every scenario")


def test_rewrite_fills_a_block_and_leaves_the_rest_alone() -> None:
    text = "before\n<!-- doctables: flags evidence-to-case -->\nSTALE ROW\n<!-- /doctables -->\nafter\n"
    new = doctables.rewrite(text)
    assert new.startswith("before\n<!-- doctables: flags evidence-to-case -->\n| flag | default | meaning |")
    assert new.endswith("<!-- /doctables -->\nafter\n") and "STALE ROW" not in new
    assert "| `--force` | off |" in new and "| `EVIDENCE.json` | required |" in new
    assert doctables.rewrite(new) == new


@pytest.mark.parametrize("name", ["flags nope", "tables", "scenarios extra"])
def test_an_unknown_table_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match="doctables"):
        doctables.render(name)


def test_check_exits_1_on_a_stale_page_and_rewriting_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "tools" / "scenarios.md"
    page.parent.mkdir()
    page.write_text("# Scenarios\n\n<!-- doctables: scenarios -->\n| stale |\n<!-- /doctables -->\n")
    assert doctables.main(["--docs", str(tmp_path), "--check"]) == 1
    assert f"run `{doctables.COMMAND}`" in capsys.readouterr().err
    assert doctables.main(["--docs", str(tmp_path)]) == 0
    assert doctables.main(["--docs", str(tmp_path), "--check"]) == 0


def test_the_log_fields_page_names_every_end_reason_the_records_carry() -> None:
    from sse_audit_proxy.core.verdict import End

    (row,) = [
        line
        for line in (DOCS / "operate/logs.md").read_text().splitlines()
        if line.startswith("| `end_reason` |")
    ]
    assert re.findall(r"`([a-z_]+)`", row.split("|")[3]) == [end.value for end in End]
