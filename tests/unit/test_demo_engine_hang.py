"""The demo engine told to hang without a word (``demo: hang-silent``, ``hang-silent-first``,
``FLEET_DEMO_HANG_SILENT=1``): what the self-healer calls stalled. Run for real, as a
subprocess; its hang ends when its factory is gone (a dead ``FLEET_FACTORY_PID``), so no test
waits for anything."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from factory_cli import demo_engine
from factory_cli.workdir import WorkPaths
from tests.unit.test_cli_demo_engine import dead_pid, run_demo

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the demo engine needs git")


def wrote_nothing(paths: WorkPaths) -> bool:
    """The attempt's files as the factory prepared them (progress and events empty, no
    checkpoint), and no repository made."""
    empty = all(not p.exists() or p.stat().st_size == 0 for p in (paths.progress, paths.events))
    return empty and not paths.checkpoint.exists() and not (paths.workdir / ".git").exists()


@pytest.mark.parametrize(
    ("body", "env", "epoch"),
    [
        ("Write notes.\ndemo: hang-silent\n", {}, 1),
        ("Write notes.\ndemo: hang-silent\n", {}, 3),  # every attempt
        ("Write notes.\ndemo: hang-silent-first\n", {}, 1),  # the first attempt
        ("Write notes.\n", {"FLEET_DEMO_HANG_SILENT": "1"}, 2),
    ],
)
def test_demo_engine_hangs_silently_until_its_factory_is_gone(
    tmp_path: Path, body: str, env: dict[str, str], epoch: int
) -> None:
    job = {"id": "j1", "title": "Write notes", "body": body}
    done, paths = run_demo(
        tmp_path,
        job,
        epoch=epoch,
        FLEET_FACTORY_PID=str(dead_pid()),
        **env,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")  # not a word
    assert wrote_nothing(paths)  # no progress, checkpoint, event, nor a repository


def test_demo_engine_hang_silent_first_does_the_work_on_a_later_attempt(
    tmp_path: Path,
) -> None:
    job = {"id": "j1", "title": "Write notes", "body": "Write notes.\ndemo: hang-silent-first\n"}
    done, paths = run_demo(
        tmp_path,
        job,
        epoch=3,
        FLEET_DEMO_STEPS="1",
        FLEET_FACTORY_PID=str(dead_pid()),
    )
    assert done.returncode == 0, done.stderr
    assert "step 1/1 committed" in done.stdout and paths.checkpoint.exists()


def test_demo_engine_stopped_while_hanging_silently_says_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        demo_engine._quietly_terminated(signal.SIGTERM, None)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr() == ("", "")
