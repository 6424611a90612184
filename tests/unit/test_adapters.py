"""The engine adapters on recorded output (tests/fixtures/engines): events, running and final
usage and cost, version and model, the engine's own failure reason; and the stand-in CLIs
that replay those recordings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factory_cli.adapters import (
    PRICES,
    Adapter,
    AiderAdapter,
    ClaudeAdapter,
    CodexAdapter,
    LogTail,
    Price,
    PricesError,
    Usage,
    adapter_for,
    codex_model,
    load_prices,
    model_from_command,
    model_key,
    parse_version,
)
from factory_cli.engines import PRESETS, render, usd_arg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"
STANDINS = Path(__file__).resolve().parents[1] / "support" / "standins"
CODEX_ENV = {"FLEET_CODEX_MODEL": "gpt-5-codex", "HOME": "/nonexistent"}


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def _fed(adapter: Adapter, name: str) -> None:
    for line in _lines(name):
        adapter.feed(line)


# --- claude -------------------------------------------------------------------------------


def test_claude_success_gives_tool_calls_usage_cost_and_result() -> None:
    adapter = adapter_for("claude", env={})
    assert isinstance(adapter, ClaudeAdapter)
    _fed(adapter, "claude_success.jsonl")
    events = adapter.drain_events()
    assert [e["type"] for e in events] == ["message", "tool_use", "tool_use", "message"]
    edit, bash = events[1]["payload"], events[2]["payload"]
    assert edit["name"] == "Edit" and json.loads(edit["input"])["file_path"].endswith("NOTES.md")
    assert bash["name"] == "Bash" and json.loads(bash["input"])["command"] == "git diff --stat"
    assert adapter.usage == Usage(input=15, output=315, cache_read=51230, cache_write=5670)
    assert adapter.cost_usd == pytest.approx(0.0414015)
    assert (adapter.version, adapter.model) == ("2.1.332", "claude-sonnet-4-5-20250929")
    assert adapter.last_line is not None and adapter.last_line.startswith("Done: NOTES.md")
    result = adapter.finish(0)
    assert (result.is_error, result.reason, result.num_turns, result.subtype) == (
        False,
        None,
        4,
        "success",
    )
    assert adapter.drain_events() == []


def test_claude_running_figures_while_streaming_count_each_message_once() -> None:
    adapter = ClaudeAdapter()
    lines = _lines("claude_success.jsonl")
    for line in lines[:4]:  # init, message 1 twice (text, then tool_use), a tool result
        adapter.feed(line)
    assert adapter.usage == Usage(input=4, output=180, cache_read=13560, cache_write=5120)
    assert adapter.cost_usd == pytest.approx(PRICES["claude-sonnet-4-5"].cost(adapter.usage))
    assert adapter.result is None
    assert adapter.last_line == "Edit: /work/job/NOTES.md"
    adapter.feed(lines[2])  # the same message's line again: still counted once
    assert adapter.usage.output == 180
    for line in lines[4:-1]:
        adapter.feed(line)
    assert adapter.usage == Usage(input=15, output=315, cache_read=51230, cache_write=5670)
    assert adapter.cost_usd == pytest.approx(0.0414015)  # the table agrees with claude


def test_claude_not_logged_in_fails_with_its_own_reason() -> None:
    adapter = ClaudeAdapter()
    _fed(adapter, "claude_not_logged_in.jsonl")
    assert adapter.drain_events() == []  # the CLI's notice is not the agent speaking
    assert adapter.last_error == "Not logged in · Please run /login"
    assert adapter.model == "claude-opus-5-5" and adapter.version == "2.1.332"
    result = adapter.finish(1)
    assert result.is_error and result.reason == "Not logged in · Please run /login"
    assert adapter.cost_usd == 0.0  # claude said so: known, not unknown


def test_claude_budget_stop_and_error_list() -> None:
    adapter = ClaudeAdapter()
    adapter.feed(
        json.dumps(
            {
                "type": "result",
                "subtype": "error_max_budget_usd",
                "is_error": True,
                "total_cost_usd": 2.01,
                "usage": {"input_tokens": 5, "output_tokens": 7},
                "errors": ["Reached maximum budget ($2)"],
            }
        )
    )
    result = adapter.finish(1)
    assert result.budget_exceeded and result.reason == "Reached maximum budget ($2)"
    assert adapter.cost_usd == 2.01 and adapter.usage.total == 12


def test_claude_unknown_model_has_unknown_running_cost() -> None:
    adapter = ClaudeAdapter()
    adapter.feed(json.dumps({"type": "system", "subtype": "init", "model": "claude-next-9"}))
    adapter.feed(
        json.dumps(
            {
                "type": "assistant",
                "message": {"id": "m1", "content": [], "usage": {"output_tokens": 10}},
            }
        )
    )
    assert adapter.usage.output == 10 and adapter.cost_usd is None


def test_tool_input_preview_is_capped() -> None:
    adapter = ClaudeAdapter()
    block = {"type": "tool_use", "name": "Write", "input": {"content": "x" * 50_000}}
    adapter.feed(json.dumps({"type": "assistant", "message": {"id": "m", "content": [block]}}))
    (event,) = adapter.drain_events()
    assert event["payload"]["truncated"] is True
    assert len(json.dumps(event).encode()) < 4096


# --- codex --------------------------------------------------------------------------------


def test_codex_success_gives_items_usage_and_cost() -> None:
    adapter = adapter_for("codex", env=CODEX_ENV)
    assert isinstance(adapter, CodexAdapter)
    _fed(adapter, "codex_success.jsonl")
    events = adapter.drain_events()
    assert [e["type"] for e in events] == [
        "reasoning",
        "command_execution",
        "file_change",
        "command_execution",
        "agent_message",
    ]
    assert events[1]["payload"] == {
        "command": "/bin/bash -lc 'cat NOTES.md'",
        "exitCode": 0,
        "status": "completed",
    }
    assert events[2]["payload"] == {"paths": ["/work/job/NOTES.md"], "count": 1}
    assert adapter.usage == Usage(input=315, output=122, cache_read=24448)
    price = PRICES["gpt-5-codex"]
    expected = (315 * price.input + 24448 * price.cached_input + 122 * price.output) / 1e6
    assert adapter.cost_usd == pytest.approx(expected)
    assert adapter.model == "gpt-5-codex" and adapter.version is None
    assert adapter.finish(0).is_error is False


def test_codex_running_figures_sum_turns() -> None:
    adapter = CodexAdapter(model="gpt-5-codex")
    lines = _lines("codex_success.jsonl")
    for line in lines[:5]:
        adapter.feed(line)
    assert adapter.usage.total == 0 and adapter.cost_usd is None and adapter.result is None
    assert adapter.last_line == "$ /bin/bash -lc 'cat NOTES.md'"
    for line in lines[5:]:
        adapter.feed(line)
    adapter.feed(lines[-1])  # a second turn
    assert adapter.usage == Usage(input=630, output=244, cache_read=48896)
    assert adapter.turns == 2


def test_codex_unknown_model_has_unknown_cost() -> None:
    adapter = adapter_for("codex", env={"HOME": "/nonexistent"})
    assert isinstance(adapter, CodexAdapter) and adapter.model is None
    _fed(adapter, "codex_success.jsonl")
    assert adapter.usage.total > 0 and adapter.cost_usd is None


def test_codex_without_network_fails_with_its_own_reason() -> None:
    adapter = CodexAdapter()
    _fed(adapter, "codex_no_network.jsonl")
    result = adapter.finish(None)  # stopped: codex retries for ever
    assert result.is_error
    assert result.reason is not None and "waiting for network" in result.reason


def test_codex_turn_failed_is_the_reason() -> None:
    adapter = CodexAdapter()
    adapter.feed('{"type":"error","message":"You\'ve hit your usage limit."}')
    adapter.feed('{"type":"turn.failed","error":{"message":"You\'ve hit your usage limit."}}')
    result = adapter.finish(1)
    assert result.is_error and result.reason == "You've hit your usage limit."


def test_codex_flag_error_on_stderr_is_the_reason() -> None:
    adapter = CodexAdapter()
    adapter.feed("error: unexpected argument '--full-auto' found")
    adapter.feed("")
    adapter.feed("  tip: to pass '--full-auto' as a value, use '-- --full-auto'")
    assert adapter.finish(2).reason == "error: unexpected argument '--full-auto' found"


@pytest.mark.parametrize(
    ("command", "model"),
    [
        ("codex exec --json -m gpt-5 - < p", "gpt-5"),
        ("codex exec --model=o3 -", "o3"),
        ('codex exec -c model="gpt-5-mini" -', "gpt-5-mini"),
        ("codex exec --json -", None),
        ("codex exec 'unterminated", None),
    ],
)
def test_model_from_command(command: str, model: str | None) -> None:
    assert model_from_command(command) == model


def test_codex_model_falls_back_to_env_then_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "gpt-5.1-codex"\n[other]\nx = 1\n')
    env = {"CODEX_HOME": str(tmp_path)}
    assert codex_model("codex exec -m o3 -", {**env, "FLEET_CODEX_MODEL": "x"}) == "o3"
    assert codex_model("codex exec -", {**env, "FLEET_CODEX_MODEL": "gpt-5"}) == "gpt-5"
    assert codex_model("codex exec -", env) == "gpt-5.1-codex"
    assert codex_model(None, {"HOME": str(tmp_path / "none")}) is None


# --- aider --------------------------------------------------------------------------------


def test_aider_session_tokens_cost_and_edits() -> None:
    adapter = adapter_for("aider", env={})
    assert isinstance(adapter, AiderAdapter)
    lines = _lines("aider_session.txt")
    for line in lines[: lines.index("Applied edit to NOTES.md")]:
        adapter.feed(line)
    assert adapter.usage == Usage(input=1200, output=85, cache_write=1100)
    assert adapter.cost_usd == 0.0097
    for line in lines[lines.index("Applied edit to NOTES.md") :]:
        adapter.feed(line)
    assert [e["type"] for e in adapter.drain_events()] == ["file_change"]
    # "sent" includes the cache writes; the cost line may follow on its own line.
    assert adapter.usage == Usage(input=1200 + 2860, output=125, cache_read=2000, cache_write=1340)
    assert adapter.cost_usd == 0.02
    assert (adapter.version, adapter.model) == ("0.86.1", "anthropic/claude-sonnet-4-20250514")
    assert adapter.finish(0).is_error is False


def test_aider_without_a_price_reports_tokens_only() -> None:
    adapter = AiderAdapter()
    adapter.feed("Tokens: 116 sent, 30 received.")
    assert adapter.usage == Usage(input=116, output=30) and adapter.cost_usd is None


# --- common -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["claude", "codex", "aider"])
def test_garbage_lines_are_ignored(engine: str) -> None:
    adapter = adapter_for(engine, env=CODEX_ENV)
    assert adapter is not None
    for line in [
        "",
        "not json",
        "{",
        "[1, 2]",
        '{"type": "assistant", "message": "oops"}',
        '{"type": "assistant", "message": {"content": [1, null, {"type": "tool_use"}]}}',
        '{"type": "result", "usage": [], "total_cost_usd": "a lot", "num_turns": true}',
        '{"type": "item.completed", "item": {"type": "file_change", "changes": "x"}}',
        '{"type": "turn.completed", "usage": {"input_tokens": -5, "output_tokens": "9"}}',
        "Tokens: lots sent, 1 received.",
        "\x00\xff binary",
    ]:
        adapter.feed(line)
    assert adapter.usage.input >= 0 and adapter.usage.output >= 0


def test_other_engines_use_the_file_protocol() -> None:
    assert adapter_for("demo", env={}) is None and adapter_for("custom", env={}) is None


def test_price_override_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-6.2-sol": {"input": 2, "cachedInput": 0.2, "output": 16}}))
    adapter = adapter_for(
        "codex",
        env={**CODEX_ENV, "FLEET_CODEX_MODEL": "gpt-6.2-sol", "FLEET_PRICES_FILE": str(prices)},
    )
    assert adapter is not None
    _fed(adapter, "codex_success.jsonl")
    assert adapter.cost_usd == pytest.approx((315 * 2 + 24448 * 0.2 + 122 * 16) / 1e6)
    table = load_prices({"FLEET_PRICES_FILE": str(prices)})
    assert table["gpt-5"] == PRICES["gpt-5"]  # the rest of the table stays


def test_price_mapping_replaces_the_table() -> None:
    adapter = adapter_for("codex", env=CODEX_ENV, prices={"gpt-5-codex": Price(1, 1, 1)})
    assert adapter is not None
    _fed(adapter, "codex_success.jsonl")
    assert adapter.cost_usd == pytest.approx((315 + 24448 + 122) / 1e6)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("[]", "expected a JSON object"),
        ('{"m": {"input": -1, "output": 1}}', "m.input"),
        ('{"m": {"input": 1}}', "m.output"),
        ('{"m": {"input": 1, "output": true}}', "m.output"),
        ("{not json", "FLEET_PRICES_FILE"),
    ],
)
def test_bad_price_file_is_a_clear_error(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(PricesError, match=field):
        load_prices({"FLEET_PRICES_FILE": str(path)})


def test_model_key_drops_provider_and_date() -> None:
    assert model_key("anthropic/claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert model_key("GPT-4.1-2025-04-14") == "gpt-4.1"


def test_parse_version() -> None:
    assert parse_version("2.1.332 (Claude Code)") == "2.1.332"
    assert parse_version("codex-cli 0.171.0\n") == "0.171.0"
    assert parse_version("nothing") is None


def test_log_tail_reads_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_bytes(b"one\ntw")
    tail = LogTail(log)
    assert tail.read_lines() == ["one"]
    with log.open("ab") as handle:
        handle.write(b"o\nthree\n")
    assert tail.read_lines() == ["two", "three"] and tail.read_lines() == []
    assert LogTail(tmp_path / "missing").read_lines() == []


# --- presets and stand-ins ----------------------------------------------------------------


def test_claude_preset_passes_the_cost_cap_only_when_set() -> None:
    values = {"prompt_file": "/w/p.md"}
    plain = render(PRESETS["claude"], values, windows=False)
    assert plain == (
        "claude -p --output-format stream-json --verbose --permission-mode acceptEdits < /w/p.md"
    )
    capped = render(PRESETS["claude"], {**values, "max_cost_usd": usd_arg(2.5)}, windows=False)
    assert "--permission-mode acceptEdits --max-budget-usd 2.5 < /w/p.md" in capped
    assert render("a {max_cost_usd:--cap} b", {"max_cost_usd": ""}, windows=False) == "a b"
    assert usd_arg(100000) == "100000" and usd_arg(0.25) == "0.25"


def _standin(
    engine: str,
    tmp_path: Path,
    extra: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    prompt = tmp_path / "prompt.md"
    prompt.write_text("Add a line to NOTES.md\n")
    command = render(PRESETS[engine], {"prompt_file": str(prompt), **(values or {})})
    env = {**os.environ, "PATH": f"{STANDINS}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(extra or {})
    done = subprocess.run(
        command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=30
    )
    return done, work


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-ins are POSIX scripts")
@pytest.mark.parametrize("engine", ["claude", "codex", "aider"])
def test_standins_run_the_presets_and_edit(engine: str, tmp_path: Path) -> None:
    done, work = _standin(engine, tmp_path, values={"max_cost_usd": "3"})
    assert done.returncode == 0, done.stderr
    assert (work / "NOTES.md").read_text() == "change made by the stand-in agent\n"
    adapter = adapter_for(engine, env=CODEX_ENV)
    assert adapter is not None
    for line in done.stdout.splitlines():
        adapter.feed(line)
    assert adapter.usage.total > 0 and adapter.cost_usd is not None
    assert adapter.finish(done.returncode).is_error is False


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-ins are POSIX scripts")
def test_standins_reject_flags_the_real_clis_reject(tmp_path: Path) -> None:
    prompt = tmp_path / "p.md"
    prompt.write_text("x")
    env = {**os.environ, "PATH": f"{STANDINS}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command, message in [
        (f"claude -p --output-format stream-json --verbose --bogus < {prompt}", "unknown option"),
        (f"claude -p --output-format stream-json < {prompt}", "requires --verbose"),
        (f"claude -p --permission-mode yolo < {prompt}", "is invalid"),
        (f"codex exec --full-auto - < {prompt}", "unexpected argument '--full-auto'"),
        (f"codex exec --json --sandbox all - < {prompt}", "invalid value"),
        (f"aider --yes-always --bogus --message-file {prompt}", "unrecognized arguments"),
    ]:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0 and message in done.stderr, command


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-ins are POSIX scripts")
def test_claude_standin_runaway_stops_at_its_budget(tmp_path: Path) -> None:
    done, work = _standin(
        "claude",
        tmp_path,
        {"STANDIN_COST_STEP": "1", "STANDIN_SLEEP": "0.01"},
        {"max_cost_usd": "2.5"},
    )
    adapter = ClaudeAdapter()
    for line in done.stdout.splitlines():
        adapter.feed(line)
    result = adapter.finish(done.returncode)
    assert done.returncode == 1 and result.budget_exceeded
    assert adapter.cost_usd is not None and adapter.cost_usd >= 2.5
    assert not (work / "NOTES.md").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-ins are POSIX scripts")
def test_codex_standin_replays_the_failure_fixture(tmp_path: Path) -> None:
    done, work = _standin("codex", tmp_path, {"STANDIN_FIXTURE": "codex_no_network.jsonl"})
    adapter = CodexAdapter()
    for line in done.stdout.splitlines():
        adapter.feed(line)
    assert done.returncode == 1 and "waiting for network" in (adapter.finish(1).reason or "")
    assert not (work / "NOTES.md").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-ins are POSIX scripts")
@pytest.mark.parametrize("engine", ["claude", "codex", "aider"])
def test_standin_hangs_after_its_first_lines(engine: str, tmp_path: Path) -> None:
    prompt = tmp_path / "p.md"
    prompt.write_text("x")
    env = {
        **os.environ,
        "PATH": f"{STANDINS}{os.pathsep}{os.environ.get('PATH', '')}",
        "STANDIN_HANG": "1",
    }
    proc = subprocess.Popen(
        render(PRESETS[engine], {"prompt_file": str(prompt)}),
        shell=True,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip()  # it speaks, then says nothing more
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert not (tmp_path / "NOTES.md").exists()
