"""``fleet-factory review`` (``responses`` for the API), and how a rejected attempt's review
comments reach the next attempt's engine (the prompt, ``FLEET_REVIEW_FILE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from factory_cli.cli import main
from factory_cli.workdir import build_prompt, prepare, review_comments
from tests.support.cli import API, enrolled

JOB = "j01jc0m9ayqj0f3a4q1x5e6n7z8"


def reviewed(stage: str, votes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": JOB,
        "stage": stage,
        "review": {"approvals": 2, "distinctKind": False, "maxRounds": 3},
        "reviewState": {"round": 1, "votes": votes},
    }


def test_cli_review_approve_with_the_factory_token(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    rsps.post(
        f"{API}/fleet/jobs/{JOB}/review",
        json=reviewed("review", [{"verdict": "approve"}]),
    )
    assert main(["review", JOB, "--approve", "-m", "looks right"], env=env) == 0
    request = rsps.calls[0].request
    assert request.headers["Authorization"] == "Bearer flf_tok"
    assert json.loads(request.body or b"{}") == {"verdict": "approve", "comments": "looks right"}
    assert f"{JOB}: review (round 1, 1/2 approvals)" in capsys.readouterr().out


def test_cli_review_reject_as_an_operator_of_a_kind(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rsps.post(f"{API}/fleet/jobs/{JOB}/review", json=reviewed("queued", []))
    argv = ["review", JOB, "--reject", "-m", "no tests", "--kind", "gpt", "--json"]
    assert main([*argv, "--api", API, "--token", "flo_x", "--product", "p"], env=env) == 0
    request = rsps.calls[0].request
    assert request.headers["Authorization"] == "Bearer flo_x"
    assert request.headers["X-Fleet-Product"] == "p"
    assert json.loads(request.body or b"{}") == {
        "verdict": "reject",
        "comments": "no tests",
        "kind": "gpt",
    }
    assert json.loads(capsys.readouterr().out)["stage"] == "queued"


def test_cli_review_request_and_refusals(
    rsps: responses.RequestsMock, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    enrolled(env)
    rsps.post(f"{API}/fleet/jobs/{JOB}/review/request", json=reviewed("review", []))
    argv = ["review", JOB, "--request", "--reviewer", "codex-1", "-m", "ready"]
    assert main(argv, env=env) == 0
    assert json.loads(rsps.calls[0].request.body or b"{}") == {
        "reviewers": ["codex-1"],
        "note": "ready",
    }
    rsps.post(
        f"{API}/fleet/jobs/{JOB}/review",
        status=409,
        json={"error": "already_voted", "message": "factory:fa has already voted in round 1"},
    )
    assert main(["review", JOB, "--approve"], env=env) == 1
    assert "already voted" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of --approve, --reject, --request is required
        main(["review", JOB], env=env)


def test_cli_review_comments_reach_the_next_attempt(tmp_path: Path) -> None:
    job = {
        "id": JOB,
        "title": "parser",
        "body": "Do it.",
        "checkpoint": {
            "branch": "wip/parser",
            "review": {
                "round": 1,
                "maxRounds": 3,
                "outcome": "rejected",
                "comments": [
                    {
                        "reviewer": "factory:codex",
                        "kind": "codex",
                        "verdict": "approve",
                        "comments": "parser ok",
                    },
                    {
                        "reviewer": "operator:alice",
                        "kind": "human",
                        "verdict": "reject",
                        "comments": "no tests\nfor errors",
                    },
                ],
            },
        },
    }
    comments = review_comments(job)
    assert comments is not None and "round 1 of 3" in comments
    assert "- operator:alice (human, reject): no tests\n  for errors" in comments
    assert comments.strip() in build_prompt(job)
    paths = prepare(tmp_path, job, 2)
    env = paths.engine_vars(JOB, 2, "fa")
    assert Path(env["FLEET_REVIEW_FILE"]).read_text(encoding="utf-8") == comments
    # The next attempt without review comments finds no stale file.
    prepare(tmp_path, {**job, "checkpoint": {"branch": "wip/parser"}}, 3)
    assert not paths.review.exists()
    assert review_comments({"checkpoint": "sha"}) is None


@pytest.mark.parametrize(
    "caps",
    [
        (),
        ("python",),
        ("engine:claude",),
        ("engine:codex", "engine:claude", "python"),
        ("kind:gpt", "engine:claude"),
        ("kind:Bad Kind!", "engine:aider"),
    ],
)
def test_cli_reviewer_kind_is_the_coordinators(caps: tuple[str, ...]) -> None:
    # The CLI ships without the coordinator's code, so it keeps its own copy of the rule
    # (to skip a same-kind review before running an engine): the two must agree.
    from factory_cli.review import factory_kind as cli_kind
    from fleet.domain.review import factory_kind as server_kind

    assert cli_kind(caps) == server_kind(caps)
