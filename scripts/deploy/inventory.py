"""Which app settings the deployed code reads, and which ones the Bicep template sets.

Both sides are derived, not listed by hand, so they cannot drift apart silently:

- the code side walks the modules the Functions app imports (from ``function_app.py``,
  following ``fleet`` imports, lazy ones included) and collects, with ``ast``, every setting
  name read from the environment: ``env.get("X")`` / ``os.environ["X"]`` / ``os.getenv("X")``,
  helper calls that take the environment and a literal name (``_int(env, "X", 300)``), names
  read in a loop over a module-level dict or through a local constant, and the ``%X%``
  binding expressions passed to triggers (timer schedules). A read it cannot resolve is reported, so
  a new indirection fails the test instead of hiding a setting;
- the template side reads the keys of the ``appsettings`` config resource in
  ``infra/app/api.bicep`` with a small Bicep scanner (strings, interpolation, comments).

The only hand-kept lists are the two allowlists below, each entry with its reason.
``tests/unit/test_infra.py`` checks the two sides against each other and
``scripts/deploy/check.py settings`` prints them for a deployer.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINT = "function_app.py"
APP_PACKAGE = "fleet"
API_TEMPLATE = Path("infra") / "app" / "api.bicep"

# Settings the code reads that a deployment deliberately does not set: each is a local or
# key-based alternative to an identity-based setting the template does set.
LOCAL_ONLY: dict[str, str] = {
    "COSMOS_ENDPOINT": "the emulator's / a key-based endpoint; a deployment sets "
    "COSMOS__accountEndpoint (managed identity) instead",
    "COSMOS_KEY": "an account key; the deployed account has local (key) auth disabled",
    "COSMOS_CONNECTION_STRING": "carries an account key; local auth is disabled in Azure",
    "AzureWebJobsStorage": "a connection string with an account key (UseDevelopmentStorage=true "
    "locally); a deployment sets AzureWebJobsStorage__accountName and the service URIs, and "
    "the storage account has shared keys disabled",
    "COSMOS_ENDPOINT_DISCOVERY": "emulator tuning: the default (off for http://, on for "
    "https:// endpoints) is already right for Azure",
}

# Settings the template sets that no fleet code reads: the Functions host reads them.
PLATFORM: dict[str, str] = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "the Functions host sends telemetry to "
    "Application Insights",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host authenticates that telemetry with "
    "its managed identity (Application Insights local auth is disabled)",
    "AzureFunctionsJobHost__extensions__queues__batchSize": "the host's queue triggers: "
    "messages fetched at once (host.json extensions.queues, overridden per deployment)",
    "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "the host's queue triggers: "
    "deliveries before a message goes to the poison queue",
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "the host's queue "
    "triggers: how long a failed message stays invisible before its retry",
}

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BINDING_EXPRESSION = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")
_ENV_NAMES = frozenset({"env", "environ", "environment"})


@dataclass(frozen=True)
class Read:
    """One place the code reads a setting."""

    name: str
    path: str  # relative to the repository root
    line: int


@dataclass
class CodeSettings:
    reads: list[Read] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # "path:line: what"
    modules: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {r.name for r in self.reads}

    def where(self, name: str) -> list[str]:
        return sorted({f"{r.path}:{r.line}" for r in self.reads if r.name == name})


# --- the modules the deployed app imports -------------------------------------------------


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_modules(tree: ast.AST, package: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != package:
                continue
            yield node.module
            for alias in node.names:  # `from fleet.http import jobs`: jobs may be a module
                yield f"{node.module}.{alias.name}"


def deployed_modules(root: Path = ROOT) -> list[Path]:
    """``function_app.py`` and every ``fleet`` module it imports, transitively (package
    ``__init__`` files included, imports inside functions too)."""
    start = root / ENTRY_POINT
    seen: dict[Path, None] = {start: None}
    queue = [start]
    while queue:
        tree = ast.parse(queue.pop().read_text(encoding="utf-8"))
        for dotted in _imported_modules(tree, APP_PACKAGE):
            parts = dotted.split(".")
            for depth in range(1, len(parts) + 1):  # parent packages are imported too
                path = _module_file(root, ".".join(parts[:depth]))
                if path is not None and path not in seen:
                    seen[path] = None
                    queue.append(path)
    return list(seen)


# --- the settings those modules read ------------------------------------------------------


def _is_env(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _ENV_NAMES
    # os.environ
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path = path
        self.reads: list[Read] = []
        self.unresolved: list[str] = []
        self._scopes: list[ast.AST] = []
        self._loops: list[tuple[ast.AST, ast.AST]] = []  # (target, iter)
        self._module_dicts = self._collect_module_dicts(tree)

    @staticmethod
    def _collect_module_dicts(tree: ast.Module) -> dict[str, ast.Dict]:
        found: dict[str, ast.Dict] = {}
        for stmt in tree.body:
            target: ast.AST | None = None
            value: ast.AST | None = None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign):
                target, value = stmt.target, stmt.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
                found[target.id] = value
        return found

    # scopes and loops
    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scopes.append(node)
        self.generic_visit(node)
        self._scopes.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self._loops.append((node.target, node.iter))
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)
        self._loops.pop()

    def _visit_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        for generator in node.generators:
            self.visit(generator.iter)
            self._loops.append((generator.target, generator.iter))
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.comprehension):
                self.visit(child)
        for _ in node.generators:
            self._loops.pop()

    visit_ListComp = _visit_comprehension
    visit_SetComp = _visit_comprehension
    visit_DictComp = _visit_comprehension
    visit_GeneratorExp = _visit_comprehension

    # reads
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        env_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_env(func.value)
        os_getenv = (
            isinstance(func, ast.Attribute)
            and func.attr == "getenv"
            and isinstance(func.value, ast.Name)
            and func.value.id == "os"
        )
        if env_get or os_getenv:
            self._read(node.args[0] if node.args else None, node)
        elif any(_is_env(arg) for arg in node.args):
            # A helper given the environment and a literal setting name: _int(env, "X", 300).
            for arg in node.args:
                text = _str(arg)
                if text is not None and _SETTING_NAME.match(text):
                    self._add(text, node)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_env(node.value) and isinstance(node.ctx, ast.Load):
            self._read(node.slice, node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn) and _is_env(right):
                self._read(node.left, node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        # Binding expressions are trigger/binding arguments: schedule="%REAPER_SCHEDULE%".
        # (Only keyword arguments: a strftime format such as "%dT%H" is not one.)
        text = _str(node.value)
        if text is not None:
            for name in _BINDING_EXPRESSION.findall(text):
                self._add(name, node.value)
        self.generic_visit(node)

    def _add(self, name: str, node: ast.AST) -> None:
        self.reads.append(Read(name, self.path, getattr(node, "lineno", 0)))

    def _read(self, key: ast.AST | None, node: ast.AST) -> None:
        if key is None:
            return
        text = _str(key)
        if text is not None:
            self._add(text, node)
            return
        if isinstance(key, ast.Name):
            names = self._resolve_name(key.id)
            if names is not None:
                for name in names:
                    self._add(name, node)
                return
        self.unresolved.append(
            f"{self.path}:{getattr(node, 'lineno', 0)}: cannot tell which setting "
            f"`{ast.unparse(key)}` names"
        )

    def _resolve_name(self, name: str) -> list[str] | None:
        """The setting names a variable can hold; [] for a helper's own parameter (its callers'
        literal arguments are collected instead); None if unknown."""
        # A loop over a module-level dict: `for name, default in DEFAULTS.items()`.
        for target, iterable in reversed(self._loops):
            position = _target_position(target, name)
            if position is None:
                continue
            return _dict_strings(iterable, position, self._module_dicts)
        if self._scopes:
            function = self._scopes[-1]
            assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            # A local constant: `name = "FLEET_OPERATOR_TOKENS"; env.get(name)`.
            values: list[str] = []
            for stmt in ast.walk(function):
                if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in stmt.targets
                ):
                    text = _str(stmt.value)
                    if text is None:
                        return None
                    values.append(text)
            if values:
                return values
            params = function.args
            every = [*params.posonlyargs, *params.args, *params.kwonlyargs]
            if any(a.arg == name for a in every):
                return []
        return None


def _target_position(target: ast.AST, name: str) -> str | None:
    """Where ``name`` sits in a loop target: "item" (the whole element), or "0"/"1"."""
    if isinstance(target, ast.Name) and target.id == name:
        return "item"
    if isinstance(target, ast.Tuple):
        for index, element in enumerate(target.elts):
            if isinstance(element, ast.Name) and element.id == name:
                return str(index)
    return None


def _dict_strings(
    iterable: ast.AST, position: str, module_dicts: dict[str, ast.Dict]
) -> list[str] | None:
    method = None
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute):
        method = iterable.func.attr
        iterable = iterable.func.value
    if not isinstance(iterable, ast.Name) or iterable.id not in module_dicts:
        return None
    mapping = module_dicts[iterable.id]
    keys = [_str(k) if k is not None else None for k in mapping.keys]
    values = [_str(v) for v in mapping.values]
    chosen: list[str | None]
    if method == "items" and position in ("0", "1"):
        chosen = keys if position == "0" else values
    elif (method in (None, "keys") and position == "item") or method == "values":
        chosen = keys if method != "values" else values
    else:
        return None
    if any(c is None for c in chosen):
        return None
    return [c for c in chosen if c is not None]


def code_settings(root: Path = ROOT) -> CodeSettings:
    result = CodeSettings()
    for path in deployed_modules(root):
        relative = path.relative_to(root).as_posix()
        result.modules.append(relative)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scanner = _Scanner(tree, relative)
        scanner.visit(tree)
        result.reads.extend(scanner.reads)
        result.unresolved.extend(scanner.unresolved)
    return result


# --- the Bicep side -----------------------------------------------------------------------


class BicepSyntaxError(ValueError):
    pass


def _skip_string(text: str, i: int) -> int:
    """``text[i]`` opens a string; return the index after it (interpolation included)."""
    if text.startswith("'''", i):
        end = text.find("'''", i + 3)
        if end < 0:
            raise BicepSyntaxError("unterminated multi-line string")
        return end + 3
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'":
            return i + 1
        if text.startswith("${", i):
            i = _skip_braces(text, i + 1)
            continue
        i += 1
    raise BicepSyntaxError("unterminated string")


def _skip_comment(text: str, i: int) -> int | None:
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        if end < 0:
            raise BicepSyntaxError("unterminated comment")
        return end + 2
    return None


def _skip_braces(text: str, i: int) -> int:
    """``text[i]`` is an opening ``{`` ``[`` or ``(``; return the index after its match."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack = [pairs[text[i]]]
    i += 1
    while i < len(text):
        char = text[i]
        after_comment = _skip_comment(text, i)
        if after_comment is not None:
            i = after_comment
        elif char == "'":
            i = _skip_string(text, i)
        elif char in pairs:
            stack.append(pairs[char])
            i += 1
        elif char in ")]}":
            if char != stack.pop():
                raise BicepSyntaxError(f"unbalanced {char!r} at offset {i}")
            i += 1
            if not stack:
                return i
        else:
            i += 1
    raise BicepSyntaxError("unbalanced braces")


_KEY = re.compile(r"\s*(?:'([^']*)'|([A-Za-z_][A-Za-z0-9_]*))\s*:")


def object_entries(body: str) -> dict[str, str]:
    """The top-level ``key: value`` entries of a Bicep object literal's inside (between its
    braces), values as source text."""
    entries: dict[str, str] = {}
    i = 0
    while i < len(body):
        after_comment = _skip_comment(body, i)
        if after_comment is not None:
            i = after_comment
            continue
        if body[i].isspace():
            i += 1
            continue
        match = _KEY.match(body, i)
        if match is None:
            raise BicepSyntaxError(f"expected a key at {body[i : i + 40]!r}")
        key = match.group(1) if match.group(1) is not None else match.group(2)
        i = start = match.end()
        # The value runs to the end of the line (a trailing comment excluded); an object,
        # array or call may span lines.
        while i < len(body) and body[i] != "\n" and _skip_comment(body, i) is None:
            if body[i] == "'":
                i = _skip_string(body, i)
            elif body[i] in "{[(":
                i = _skip_braces(body, i)
            else:
                i += 1
        value = body[start:i]
        if key in entries:
            raise BicepSyntaxError(f"duplicate key {key!r}")
        entries[key] = value.strip()
    return entries


def _block_after(text: str, opening: int) -> str:
    end = _skip_braces(text, opening)
    return text[opening + 1 : end - 1]


def resources(text: str) -> dict[str, tuple[str, str]]:
    """Every top-level ``resource`` declaration: symbolic name -> (type@version, body)."""
    found: dict[str, tuple[str, str]] = {}
    for match in re.finditer(
        r"^resource\s+(\w+)\s+'([^']+)'(?:\s+existing)?\s*=\s*(?:\[\s*for[^:]*:\s*)?\{",
        text,
        re.MULTILINE,
    ):
        found[match.group(1)] = (match.group(2), _block_after(text, match.end() - 1))
    return found


def app_settings(template: Path | None = None) -> dict[str, str]:
    """The app settings the template sets: name -> Bicep value expression, read from the
    ``Microsoft.Web/sites/config`` resource named ``appsettings``."""
    path = template or ROOT / API_TEMPLATE
    text = path.read_text(encoding="utf-8")
    for kind, body in resources(text).values():
        if not kind.startswith("Microsoft.Web/sites/config@"):
            continue
        entries = object_entries(body)
        if entries.get("name") != "'appsettings'":
            continue
        properties = entries.get("properties", "")
        if not (properties.startswith("{") and properties.endswith("}")):
            raise BicepSyntaxError("the appsettings properties must be an object literal")
        return object_entries(properties[1:-1])
    raise BicepSyntaxError(f"no appsettings config resource in {path}")


def param_defaults(template: Path) -> dict[str, str]:
    """``param name type = default`` declarations: name -> default source text."""
    text = template.read_text(encoding="utf-8")
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^param\s+(\w+)\s+\w+\s*=\s*(.+)$", text, re.MULTILINE)
    }


def bicep_string(literal: str) -> str:
    """The value of a simple single-quoted Bicep string literal."""
    if not (len(literal) >= 2 and literal[0] == literal[-1] == "'") or "${" in literal:
        raise BicepSyntaxError(f"not a plain string literal: {literal}")
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


# --- the comparison -----------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """What keeps the code and the template from agreeing (empty lists: they agree)."""

    missing: list[str]  # read by the code, not set by the template, not local-only
    stale: list[str]  # set by the template, read by neither the code nor the host
    local_only_set: list[str]  # a local-only (key-based) setting the template sets anyway
    stale_allowlist: list[str]  # an allowlist entry the code no longer reads / template lacks
    unresolved: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.stale
            or self.local_only_set
            or self.stale_allowlist
            or self.unresolved
        )

    def messages(self) -> Iterable[str]:
        for name in self.missing:
            yield (
                f"{name}: the code reads it but infra/app/api.bicep does not set it (set it in "
                "the appsettings resource, or add it to LOCAL_ONLY with a reason)"
            )
        for name in self.stale:
            yield f"{name}: the template sets it but nothing reads it (remove it)"
        for name in self.local_only_set:
            yield f"{name}: listed as local-only, yet the template sets it"
        for name in self.stale_allowlist:
            yield f"{name}: an allowlist entry that no longer applies (remove it)"
        yield from self.unresolved


def compare(code: CodeSettings, template: dict[str, str]) -> Drift:
    read = code.names
    wanted = read - LOCAL_ONLY.keys()
    return Drift(
        missing=sorted(wanted - template.keys()),
        stale=sorted(template.keys() - read - PLATFORM.keys()),
        local_only_set=sorted(LOCAL_ONLY.keys() & template.keys()),
        stale_allowlist=sorted((LOCAL_ONLY.keys() - read) | (PLATFORM.keys() - template.keys())),
        unresolved=list(code.unresolved),
    )
