"""The factory image (Dockerfile, .dockerignore) keeps its promises, read from its text.

There is no image build in the tests (no Docker daemon here or in CI), so what the Dockerfile
says is checked against what it must agree with: pinned bases; the engine CLIs at the versions
package.json pins, and only presets the CLI knows; fleet-factory installed from this repo's
package alone (its one dependency pinned as requirements-dev.txt tests it), so no coordinator
code or Azure SDK gets in; a non-root user; no secret in the image; the entrypoint and the
default command the CLI's own parser accepts.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from factory_cli.cli import build_parser
from factory_cli.engines import PRESETS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# The npm package of each npm engine, and the ARG holding its version.
NPM_ENGINES = {
    "claude": ("@anthropic-ai/claude-code", "CLAUDE_CODE_VERSION"),
    "codex": ("@openai/codex", "CODEX_VERSION"),
}
TOKEN = re.compile(r"\bfl[eofs]_[A-Za-z0-9_-]{8,}")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIAL", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order, (KEYWORD, arguments): comments dropped, lines
    continued with a trailing backslash joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (a FROM starts one)."""
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            out.append([])
        assert out, f"{keyword} before the first FROM"
        out[-1].append((keyword, rest))
    return out


def args(stage: list[tuple[str, str]]) -> dict[str, str]:
    """A stage's ARG defaults: name -> value (quotes removed)."""
    found: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ARG":
            name, _, value = rest.partition("=")
            found[name] = value.strip('"')
    return found


def env_names(stage: list[tuple[str, str]]) -> set[str]:
    names: set[str] = set()
    for keyword, rest in stage:
        if keyword == "ENV":
            names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", rest))
    return names


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_factory_image_instructions_join_continuations_and_skip_comments() -> None:
    text = '# c\nFROM a:1 AS b\nRUN x \\\n  # inside\n  y\nARG E="p q"\n'
    assert instructions(text) == [("FROM", "a:1 AS b"), ("RUN", "x y"), ("ARG", 'E="p q"')]
    assert args(stages(text)[0]) == {"E": "p q"}


def test_factory_image_bases_are_pinned_by_version(dockerfile: str) -> None:
    froms = [rest for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert len(froms) == 2
    for base in froms:
        image = base.split()[0]
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: pin the base to a full version"
        assert "latest" not in tag
    # The final image is Python's (the CLI), the version the project targets.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    minimum = requires["requires-python"].removeprefix(">=")
    assert froms[-1].startswith(f"python:{minimum}.")


def test_factory_image_engine_versions_are_package_jsons_pins(dockerfile: str) -> None:
    pins = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["devDependencies"]
    engines_stage = stages(dockerfile)[0]
    defaults = args(engines_stage)
    install = next(rest for keyword, rest in engines_stage if keyword == "RUN")
    for engine, (package, arg) in NPM_ENGINES.items():
        assert defaults[arg] == pins[package], f"{arg}: package.json pins {pins[package]}"
        assert f'{engine}) packages="$packages {package}@${arg}"' in install
    # ENGINES names only presets fleet-factory knows, the same default in both stages.
    final = stages(dockerfile)[-1]
    assert args(engines_stage)["ENGINES"] == args(final)["ENGINES"]
    assert set(args(final)["ENGINES"].split()) <= PRESETS.keys()
    known = set(re.findall(r"(\w+)\) ", install))
    assert known == {"claude", "codex", "aider"} <= PRESETS.keys()
    assert re.fullmatch(r"\d+\.\d+\.\d+", args(final)["AIDER_VERSION"])
    assert any(
        k == "RUN" and '"aider-chat==$AIDER_VERSION"' in r and "python -m venv /opt/aider" in r
        for k, r in final
    )


def test_factory_image_installs_the_factory_package_only(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    copied = [
        rest.split()[0] for keyword, rest in final if keyword == "COPY" and "--from" not in rest
    ]
    assert copied == ["pyproject.toml", "factory_cli"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["setuptools"]["packages"] == ["factory_cli"]
    # Its only dependency is requests: no Azure SDK, nothing of the coordinator.
    dependencies = [re.split(r"[<>=!~\[ ]", d)[0] for d in project["project"]["dependencies"]]
    assert dependencies == ["requests"]
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    tested = re.search(r"^requests==(\S+)", dev, re.M)
    assert tested and args(final)["REQUESTS_VERSION"] == tested.group(1)
    assert any(
        k == "RUN" and r.startswith('pip install "requests==$REQUESTS_VERSION" /src')
        for k, r in final
    )
    assert "requirements.txt" not in dockerfile
    # The build context holds nothing else (.dockerignore: everything out, two paths back in).
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert [line for line in ignore if line.startswith("!")] == ["!pyproject.toml", "!factory_cli/"]


def test_factory_image_runs_as_a_user_that_is_not_root(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    keywords = [keyword for keyword, _ in final]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert not any(k == "RUN" for k in keywords[keywords.index("USER") :]), "RUN after USER"
    assert any(k == "RUN" and f"--uid {user} " in r for k, r in final)


def test_factory_image_holds_no_secret(dockerfile: str) -> None:
    assert not TOKEN.search(dockerfile)
    for stage in stages(dockerfile):
        names = env_names(stage) | set(args(stage))
        assert not {n for n in names if SECRET_NAME.search(n)}, names
    # The factory's own secrets come from the environment when it runs, never the image.
    for variable in ("FLEET_TOKEN", "FLEET_ENROLLMENT_TOKEN", "FLEET_OPERATOR_TOKEN"):
        assert not any(variable in env_names(stage) for stage in stages(dockerfile))
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert "!local.settings" not in ignore and "!.env" not in ignore


def test_factory_image_entrypoint_and_command_are_an_ephemeral_factory(dockerfile: str) -> None:
    final = dict(stages(dockerfile)[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["fleet-factory"]
    command = json.loads(final["CMD"])
    assert command[:2] == ["run", "--exit-when-idle"]
    parsed = build_parser().parse_args(command)
    assert parsed.command == "run"
    assert parsed.exit_when_idle == float(command[2]) > 0
    # The console script the entrypoint names is the one the package declares.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "fleet-factory" in project["project"]["scripts"]
