"""Engine adapters: read an agent CLI's own output as it streams.

Each adapter is fed the engine's output one complete line at a time (``engine.log`` holds
stdout and stderr together, so lines that are not the engine's machine format are skipped —
they stay in the log). It keeps running figures (``usage``, ``cost_usd``), what the engine
told about itself (``version``, ``model``), something a person can read (``last_line``), the
engine's most recent error in its own words (``last_error``), and the final ``result``. Agent
events accumulate until ``drain_events()``; each is ``{"type", "payload"}`` with a payload far
under the coordinator's 16 KiB limit. Feeding never raises.

The formats, checked against the CLIs themselves (see tests/fixtures/engines/README.md):

- ``claude -p --output-format stream-json --verbose``: a ``system``/``init`` line (``model``,
  ``claude_code_version``), ``assistant`` lines (one per content block: ``text`` → a
  ``message`` event, ``tool_use`` → a ``tool_use`` event with the tool's name and its input
  cut to 2 KiB; each line repeats its message's ``usage``, so usage is kept per message id,
  never summed per line), ``user`` lines (tool results, not forwarded), and a last ``result``
  line whose ``total_cost_usd``, ``usage``, ``num_turns``, ``is_error``, ``subtype`` and
  ``result`` text are final. Without credentials it prints an ``assistant`` line with
  ``"error": "authentication_failed"`` and a ``result`` with ``is_error`` and the reason
  ("Not logged in · Please run /login"). Its subtype ``error_max_budget_usd`` means its own
  ``--max-budget-usd`` stopped it.
- ``codex exec --json``: ``thread.started``, ``turn.started``, ``item.started`` /
  ``item.completed`` (``command_execution`` {command, exit_code, status}, ``file_change``
  {changes: [{path, kind}]}, ``agent_message`` {text}, ``reasoning`` {text}, ``error``
  {message}, ``mcp_tool_call``, ``web_search``), ``turn.completed`` {usage: input_tokens
  (cached ones included), cached_input_tokens, output_tokens}, ``turn.failed`` {error:
  {message}} and ``error`` {message}. Without network it retries for ever ("Reconnecting...
  waiting for network"): the factory's timeout ends it, and ``finish`` then gives the last
  error as the reason.
- ``aider``: ``Tokens: 2.3k sent, 1.1k cache write, 2.0k cache hit, 85 received.`` then
  ``Cost: $0.01 message, $0.05 session.`` (on the same line, or the next when both cache
  figures are shown); also ``Aider v0.86.1`` and ``Main model: NAME with ...`` at start and
  ``Applied edit to PATH``. "sent" includes the cache writes; the session cost is aider's own.

Costs. Claude Code reports its final cost itself; while it runs, and for codex always, the
cost comes from ``PRICES`` — USD per million tokens for input, cached input (cache reads),
cache writes and output, from the vendors' published API prices (date in ``PRICES_AS_OF``).
A JSON file named by ``FLEET_PRICES_FILE`` (or a ``prices`` mapping) adds or replaces models:
``{"gpt-5": {"input": 1.25, "cachedInput": 0.125, "output": 10.0}}`` (``cacheWrite``
optional, default the input price). A model not in the table has cost ``None`` — unknown,
never reported as $0.

Codex's model. ``codex exec --json`` never names the model on stdout (only its session file
under ``$CODEX_HOME/sessions`` does). The codex adapter takes it from, in order: ``-m`` /
``--model`` / ``-c model=...`` in the engine command, ``FLEET_CODEX_MODEL``, then ``model``
in ``$CODEX_HOME/config.toml`` (default ``~/.codex/config.toml``). Codex's built-in default
model changes between releases and is not guessed: set one of those for a known cost.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from factory_cli.workdir import open_regular

TEXT_CHARS = 2000  # message text kept per event
INPUT_PREVIEW_BYTES = 2048  # a tool call's input, as JSON, cut to this
MAX_PATHS = 100  # paths kept in one file_change event
MAX_PENDING_EVENTS = 5000  # undrained events kept; later ones are counted, not kept
MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer log line is skipped (it stays in engine.log)
PRICES_FILE_ENV = "FLEET_PRICES_FILE"
CODEX_MODEL_ENV = "FLEET_CODEX_MODEL"


# --- figures ------------------------------------------------------------------------------


@dataclass
class Usage:
    """Tokens, in disjoint buckets: ``input`` excludes the cached reads and writes."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cacheRead": self.cache_read,
            "cacheWrite": self.cache_write,
        }


@dataclass(frozen=True)
class EngineResult:
    """How the engine says its run ended. ``reason`` is in the engine's own words (None when
    it gave none); ``text`` is its final answer when it has one."""

    is_error: bool
    reason: str | None = None
    num_turns: int | None = None
    subtype: str | None = None
    text: str | None = None

    @property
    def budget_exceeded(self) -> bool:
        """The engine stopped itself at its own spending cap (claude ``--max-budget-usd``)."""
        return self.subtype == "error_max_budget_usd"


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    cached_input: float
    output: float
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        write = self.input if self.cache_write is None else self.cache_write
        return (
            usage.input * self.input
            + usage.cache_read * self.cached_input
            + usage.cache_write * write
            + usage.output * self.output
        ) / 1_000_000


PRICES_AS_OF = "2025-11"
# Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input.
# OpenAI: cached input as listed; no cache-write charge.
PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 0.5, 25.0, 6.25),
    "claude-opus-4-1": Price(15.0, 1.5, 75.0, 18.75),
    "claude-opus-4": Price(15.0, 1.5, 75.0, 18.75),
    "claude-sonnet-4-5": Price(3.0, 0.3, 15.0, 3.75),
    "claude-sonnet-4": Price(3.0, 0.3, 15.0, 3.75),
    "claude-haiku-4-5": Price(1.0, 0.1, 5.0, 1.25),
    "claude-3-5-haiku": Price(0.8, 0.08, 4.0, 1.0),
    "gpt-5": Price(1.25, 0.125, 10.0),
    "gpt-5-codex": Price(1.25, 0.125, 10.0),
    "gpt-5.1": Price(1.25, 0.125, 10.0),
    "gpt-5.1-codex": Price(1.25, 0.125, 10.0),
    "gpt-5-mini": Price(0.25, 0.025, 2.0),
    "gpt-5.1-codex-mini": Price(0.25, 0.025, 2.0),
    "gpt-5-nano": Price(0.05, 0.005, 0.4),
    "gpt-4.1": Price(2.0, 0.5, 8.0),
    "o3": Price(2.0, 0.5, 8.0),
    "o4-mini": Price(1.1, 0.275, 4.4),
}

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def model_key(model: str) -> str:
    """A model name as the price table knows it: lower case, no provider prefix
    (``anthropic/``, ``openai/``), no release date suffix."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return _DATE_SUFFIX.sub("", name)


class PricesError(ValueError):
    """The price file or mapping is not valid."""


def parse_prices(data: Any, *, source: str) -> dict[str, Price]:
    """``{"model": {"input", "cachedInput", "output", "cacheWrite"?}}`` → prices."""
    if not isinstance(data, Mapping):
        raise PricesError(f"{source}: expected a JSON object of model -> prices")
    out: dict[str, Price] = {}
    for model, entry in data.items():
        if not isinstance(model, str) or not isinstance(entry, Mapping):
            raise PricesError(f"{source}: {model!r}: expected an object of prices")
        values: dict[str, float | None] = {}
        for key in ("input", "cachedInput", "output", "cacheWrite"):
            value = entry.get(key)
            if value is None and key == "cacheWrite":
                values[key] = None
                continue
            if value is None and key == "cachedInput":
                value = entry.get("input")
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise PricesError(f"{source}: {model}.{key}: expected a number >= 0")
            values[key] = float(value)
        out[model_key(model)] = Price(
            input=values["input"] or 0.0,
            cached_input=values["cachedInput"] or 0.0,
            output=values["output"] or 0.0,
            cache_write=values["cacheWrite"],
        )
    return out


def load_prices(env: Mapping[str, str] | None = None) -> dict[str, Price]:
    """``PRICES`` with ``FLEET_PRICES_FILE``'s entries on top."""
    env = os.environ if env is None else env
    prices = dict(PRICES)
    path = env.get(PRICES_FILE_ENV)
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PricesError(f"{PRICES_FILE_ENV}={path}: {exc}") from exc
        prices.update(parse_prices(data, source=f"{PRICES_FILE_ENV}={path}"))
    return prices


def price_for(model: str | None, prices: Mapping[str, Price]) -> Price | None:
    return prices.get(model_key(model)) if model else None


# --- small helpers ------------------------------------------------------------------------


def _cap(text: str, limit: int = TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap_bytes(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", errors="ignore"), True


def _last_text_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if line.strip():
            return _cap(line.strip(), 300)
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_PLAIN_ERROR = re.compile(r"^(?:error|Error|ERROR)(?:\[[^\]]*\])?: .+")


# --- the protocol and the common part -------------------------------------------------------


class Adapter(Protocol):
    name: str
    usage: Usage
    cost_usd: float | None
    version: str | None
    model: str | None
    last_line: str | None
    last_error: str | None
    result: EngineResult | None

    def feed(self, line: str) -> None:
        """One complete line of the engine's output (with or without its newline)."""
        ...

    def drain_events(self) -> list[dict[str, Any]]:
        """The agent events seen since the last drain, oldest first."""
        ...

    def finish(self, exit_code: int | None) -> EngineResult:
        """The final result once the engine has exited (``None``: it was stopped)."""
        ...


@dataclass
class _Base:
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(PRICES))
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    version: str | None = None
    model: str | None = None
    last_line: str | None = None
    last_error: str | None = None
    result: EngineResult | None = None
    dropped_events: int = 0
    _events: list[dict[str, Any]] = field(default_factory=list)

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self.dropped_events += 1
            return
        self._events.append({"type": kind, "payload": payload})

    def drain_events(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        try:
            self._feed(line)
        except (ValueError, TypeError, KeyError, AttributeError):
            # A line we cannot read is still in engine.log; the run goes on.
            return

    def _feed(self, line: str) -> None:
        raise NotImplementedError

    def _plain_line(self, line: str) -> None:
        """A line that is not the engine's machine format (its stderr, mostly)."""
        if _PLAIN_ERROR.match(line.strip()):
            self.last_error = _cap(line.strip(), 500)

    def finish(self, exit_code: int | None) -> EngineResult:
        result = self.result
        if result is None:
            failed = exit_code != 0
            result = EngineResult(is_error=failed, reason=self.last_error if failed else None)
        elif exit_code not in (0, None) and not result.is_error:
            result = EngineResult(
                is_error=True,
                reason=self.last_error,
                num_turns=result.num_turns,
                subtype=result.subtype,
                text=result.text,
            )
        self.result = result
        return result


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    data = json.loads(text)
    return data if isinstance(data, dict) else None


# --- claude -------------------------------------------------------------------------------


def _claude_usage(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    return Usage(
        input=_int(raw.get("input_tokens")),
        output=_int(raw.get("output_tokens")),
        cache_read=_int(raw.get("cache_read_input_tokens")),
        cache_write=_int(raw.get("cache_creation_input_tokens")),
    )


def _tool_summary(name: str, tool_input: Any) -> str:
    if isinstance(tool_input, Mapping):
        for key in ("command", "file_path", "path", "pattern", "url", "description", "prompt"):
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return _cap(f"{name}: {value.splitlines()[0] if value.strip() else value}", 300)
    return name


@dataclass
class _JsonLines(_Base):
    """An engine that speaks JSON lines on stdout (its stderr, in the same log, does not)."""

    def _feed(self, line: str) -> None:
        data = _json_object(line)
        if data is None:
            self._plain_line(line)
        else:
            self._record(data)

    def _record(self, data: dict[str, Any]) -> None:
        raise NotImplementedError


@dataclass
class ClaudeAdapter(_JsonLines):
    name: str = "claude"
    # message id -> (model, usage): each content-block line repeats its message's usage.
    _messages: dict[str, tuple[str | None, Usage]] = field(default_factory=dict)
    _final: bool = False

    def _record(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self.model = _str(data.get("model")) or self.model
            self.version = _str(data.get("claude_code_version")) or self.version
        elif kind == "assistant":
            self._assistant(data)
        elif kind == "result":
            self._result(data)

    def _assistant(self, data: Mapping[str, Any]) -> None:
        message = data.get("message")
        if not isinstance(message, Mapping):
            return
        model = _str(message.get("model"))
        if model == "<synthetic>":  # written by the CLI itself, not by a model
            model = None
        message_id = _str(message.get("id")) or _str(data.get("uuid"))
        if message_id and not self._final:
            self._messages[message_id] = (model or self.model, _claude_usage(message.get("usage")))
            self._running_figures()
        error = _str(data.get("error"))
        texts: list[str] = []
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = block["text"]
                if text.strip():
                    texts.append(text)
                    self.last_line = _last_text_line(text) or self.last_line
                    if not error:  # the CLI's own error notice is not the agent speaking
                        self._emit("message", {"text": _cap(text)})
            elif block.get("type") == "tool_use":
                name = _str(block.get("name")) or "tool"
                tool_input = block.get("input")
                preview, cut = _cap_bytes(
                    json.dumps(tool_input, ensure_ascii=False, default=str), INPUT_PREVIEW_BYTES
                )
                payload: dict[str, Any] = {"name": name, "input": preview}
                if cut:
                    payload["truncated"] = True
                if _str(block.get("id")):
                    payload["id"] = block["id"]
                self._emit("tool_use", payload)
                self.last_line = _tool_summary(name, tool_input)
        if error:
            self.last_error = _cap(" ".join(texts).strip() or error, 500)

    def _running_figures(self) -> None:
        total = Usage()
        cost: float | None = 0.0
        for model, usage in self._messages.values():
            total = total + usage
            if usage.total == 0 or cost is None:
                continue
            price = price_for(model, self.prices)
            cost = None if price is None else cost + price.cost(usage)
        self.usage = total
        self.cost_usd = cost if total.total else None

    def _result(self, data: Mapping[str, Any]) -> None:
        self._final = True
        if isinstance(data.get("usage"), Mapping):
            self.usage = _claude_usage(data["usage"])
        cost = data.get("total_cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
            self.cost_usd = float(cost)
        is_error = data.get("is_error") is True or str(data.get("subtype", "")).startswith("error")
        text = _str(data.get("result"))
        reason = None
        if is_error:
            errors = data.get("errors")
            listed = (
                "; ".join(e for e in errors if isinstance(e, str))
                if isinstance(errors, list)
                else ""
            )
            reason = _cap(text or listed or self.last_error or str(data.get("subtype")), 500)
        turns = data.get("num_turns")
        self.result = EngineResult(
            is_error=is_error,
            reason=reason,
            num_turns=turns if isinstance(turns, int) and not isinstance(turns, bool) else None,
            subtype=_str(data.get("subtype")),
            text=_cap(text) if text else None,
        )
        if text:
            self.last_line = _last_text_line(text) or self.last_line


# --- codex --------------------------------------------------------------------------------


@dataclass
class CodexAdapter(_JsonLines):
    name: str = "codex"
    turns: int = 0
    _failed: str | None = None

    def _record(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind in ("item.started", "item.completed"):
            item = data.get("item")
            if isinstance(item, Mapping):
                self._item(item, completed=kind == "item.completed")
        elif kind == "turn.completed":
            self._turn_completed(data.get("usage"))
        elif kind == "turn.failed":
            error = data.get("error")
            message = _str(error.get("message")) if isinstance(error, Mapping) else None
            self._failed = _cap(message or "turn failed", 500)
            self.last_error = self._failed
            self.result = EngineResult(is_error=True, reason=self._failed, num_turns=self.turns)
        elif kind == "error":
            message = _str(data.get("message"))
            if message:
                self.last_error = _cap(message, 500)

    def _turn_completed(self, raw: Any) -> None:
        self.turns += 1
        if isinstance(raw, Mapping):
            total_input = _int(raw.get("input_tokens"))
            cached = min(_int(raw.get("cached_input_tokens")), total_input)
            self.usage = self.usage + Usage(
                input=total_input - cached, output=_int(raw.get("output_tokens")), cache_read=cached
            )
        price = price_for(self.model, self.prices)
        self.cost_usd = None if price is None else price.cost(self.usage)
        if self._failed is None:
            self.result = EngineResult(is_error=False, num_turns=self.turns)

    def _item(self, item: Mapping[str, Any], *, completed: bool) -> None:
        kind = item.get("type")
        if kind == "command_execution":
            command = _cap(str(item.get("command", "")))
            self.last_line = _cap(f"$ {command}", 300)
            if completed:
                code = item.get("exit_code")
                self._emit(
                    "command_execution",
                    {
                        "command": command,
                        "exitCode": code if isinstance(code, int) else None,
                        "status": _str(item.get("status")),
                    },
                )
        elif not completed:
            return
        elif kind == "file_change":
            changes = item.get("changes")
            paths = [
                c["path"]
                for c in (changes if isinstance(changes, list) else [])
                if isinstance(c, Mapping) and isinstance(c.get("path"), str)
            ]
            self._emit("file_change", {"paths": paths[:MAX_PATHS], "count": len(paths)})
            if paths:
                self.last_line = _cap("edited " + ", ".join(paths[:5]), 300)
        elif kind in ("agent_message", "reasoning"):
            text = str(item.get("text", ""))
            if text.strip():
                self._emit(str(kind), {"text": _cap(text)})
                if kind == "agent_message":
                    self.last_line = _last_text_line(text) or self.last_line
        elif kind == "mcp_tool_call":
            self._emit(
                "mcp_tool_call",
                {
                    "server": _str(item.get("server")),
                    "tool": _str(item.get("tool")),
                    "status": _str(item.get("status")),
                },
            )
        elif kind == "web_search":
            self._emit("web_search", {"query": _cap(str(item.get("query", "")), 500)})
        elif kind == "error":
            message = _str(item.get("message"))
            if message:
                self.last_error = _cap(message, 500)


# --- aider --------------------------------------------------------------------------------

_COUNT = r"([\d.]+)([kKmM]?)"
_AIDER_TOKENS = re.compile(
    rf"^Tokens: {_COUNT} sent(?:, {_COUNT} cache write)?(?:, {_COUNT} cache (?:hit|read))?"
    rf", {_COUNT} received\."
)
_AIDER_COST = re.compile(r"Cost: \$([\d.]+) message, \$([\d.]+) session\.")
_AIDER_VERSION = re.compile(r"^Aider v(\d+\.\d+\.\d+\S*)")
_AIDER_MODEL = re.compile(r"^(?:Main model|Model): (\S+)")
_AIDER_APPLIED = re.compile(r"^Applied edit to (.+)$")
_AIDER_ERROR = re.compile(r"^(?:litellm\.\w+|\w*Error\b)[:\s].*")


def _aider_count(number: str | None, suffix: str | None) -> int:
    if not number:
        return 0
    scale = {"k": 1_000, "m": 1_000_000}.get((suffix or "").lower(), 1)
    return round(float(number) * scale)


@dataclass
class AiderAdapter(_Base):
    name: str = "aider"

    def _feed(self, line: str) -> None:
        text = line.strip()
        tokens = _AIDER_TOKENS.match(text)
        if tokens:
            g = tokens.groups()
            sent, write = _aider_count(g[0], g[1]), _aider_count(g[2], g[3])
            self.usage = self.usage + Usage(
                input=max(sent - write, 0),
                cache_write=write,
                cache_read=_aider_count(g[4], g[5]),
                output=_aider_count(g[6], g[7]),
            )
        cost = _AIDER_COST.search(text)
        if cost:
            self.cost_usd = float(cost.group(2))
        if tokens or cost:
            return
        if match := _AIDER_VERSION.match(text):
            self.version = match.group(1)
        elif match := _AIDER_MODEL.match(text):
            self.model = match.group(1)
        elif match := _AIDER_APPLIED.match(text):
            path = match.group(1).strip()
            self._emit("file_change", {"paths": [path], "count": 1})
            self.last_line = _cap(text, 300)
        elif _AIDER_ERROR.match(text) or _PLAIN_ERROR.match(text):
            self.last_error = _cap(text, 500)
        else:
            self.last_line = _cap(text, 300)


# --- choosing one -------------------------------------------------------------------------

ADAPTERS: dict[str, type[ClaudeAdapter] | type[CodexAdapter] | type[AiderAdapter]] = {
    "claude": ClaudeAdapter,
    "codex": CodexAdapter,
    "aider": AiderAdapter,
}


def model_from_command(command: str) -> str | None:
    """The model a codex/claude/aider command line asks for: ``-m X``, ``--model X``,
    ``--model=X`` or ``-c model=X`` / ``--config model="X"``."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    found: str | None = None
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else None
        if word in ("-m", "--model") and following:
            found = following
        elif word.startswith("--model="):
            found = word.split("=", 1)[1]
        elif word in ("-c", "--config") and following and following.startswith("model="):
            found = following.split("=", 1)[1].strip().strip("\"'")
    return found or None


def model_from_codex_config(text: str) -> str | None:
    try:
        model = tomllib.loads(text).get("model")
    except tomllib.TOMLDecodeError:
        return None
    return model if isinstance(model, str) and model else None


def codex_model(command: str | None, env: Mapping[str, str]) -> str | None:
    """Codex's model: from the command, ``FLEET_CODEX_MODEL``, or codex's config file."""
    model = model_from_command(command) if command else None
    if model or env.get(CODEX_MODEL_ENV):
        return model or env.get(CODEX_MODEL_ENV)
    home = env.get("CODEX_HOME") or str(Path(env.get("HOME") or Path.home()) / ".codex")
    try:
        return model_from_codex_config((Path(home) / "config.toml").read_text(encoding="utf-8"))
    except OSError:
        return None


def adapter_for(
    engine: str,
    *,
    command: str | None = None,
    env: Mapping[str, str] | None = None,
    prices: Mapping[str, Price] | None = None,
) -> Adapter | None:
    """The adapter reading ``engine``'s output; None for any other engine (it speaks the
    ``FLEET_PROGRESS_FILE`` / ``FLEET_EVENTS_FILE`` protocol instead). ``command`` is the
    rendered engine command (codex's model may be in it); ``prices`` replaces the table
    (default: ``PRICES`` plus ``FLEET_PRICES_FILE``, which raises ``PricesError`` if bad)."""
    cls = ADAPTERS.get(engine)
    if cls is None:
        return None
    env = os.environ if env is None else env
    table = dict(prices) if prices is not None else load_prices(env)
    adapter = cls(prices=table)
    if isinstance(adapter, CodexAdapter):
        adapter.model = codex_model(command, env)
    return adapter  # each concrete adapter satisfies the Adapter protocol


_VERSION = re.compile(r"\d+\.\d+\.\d+[0-9A-Za-z.+-]*")


def parse_version(text: str) -> str | None:
    """``2.1.332 (Claude Code)`` / ``codex-cli 0.171.0`` / ``aider 0.86.1`` → the version."""
    match = _VERSION.search(text)
    return match.group(0) if match else None


def probe_version(
    executable: str, env: Mapping[str, str] | None = None, timeout: float = 10.0
) -> str | None:
    """``EXECUTABLE --version``'s version, or None (not found, failed, or timed out). Codex
    does not name its version on its JSON stream; this does."""
    try:
        done = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ if env is None else env),
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(done.stdout) if done.returncode == 0 else None


class LogTail:
    """Complete new lines of a growing log file, from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read_lines(self) -> list[str]:
        try:
            with open_regular(self.path) as handle:
                handle.seek(self.offset)
                data = handle.read(MAX_LINE_BYTES)
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= MAX_LINE_BYTES:  # one line longer than we read: skip it
                self.offset += len(data)
            return []
        self.offset += end + 1
        return [raw.decode("utf-8", errors="replace") for raw in data[:end].split(b"\n")]
