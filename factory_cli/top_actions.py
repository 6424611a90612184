"""What the board's keys do: the operator's actions, as pure steps around one request.

An action is on the selected job (ship, requeue, reject, cancel, reprioritize), the selected
factory (pause, resume, drain, restart-engine: a command it picks up on its next heartbeat)
or the product (its budget paused or resumed). Each is a ``Spec``: what it asks the operator
(a priority, a reason, a checkpoint), whether it asks for confirmation (the destructive ones),
and the request it becomes. ``run_action`` walks those steps through an ``ask`` callback (the
terminal's prompt line, or a test's answers), sends the request and returns the status line:
what was done, or the server's refusal (status, code, message). It never raises on an HTTP
error, and nothing is sent when the operator cancels or an answer is invalid.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from factory_cli.top_board import (
    BUDGETS,
    FACTORIES,
    JOBS,
    FactoryRow,
    JobRow,
    TopClient,
    describe_error,
)

REASON = "operator via fleet-factory top"  # the reason recorded when the operator gives none
REASON_MAX = 2000  # the coordinator's limit

Target = Literal["job", "factory", "product"]
Question = Literal["priority", "reason", "checkpoint", "confirm"]
JobAction = Literal["ship", "requeue", "reject", "cancel"]


@dataclass(frozen=True)
class Spec:
    key: str
    name: str  # the action as the status line names it
    target: Target
    confirm: bool = False  # destructive: asks y/N last
    asks: tuple[Question, ...] = ()  # asked in this order, before the confirmation


SPECS = (
    Spec("s", "ship", "job", confirm=True),
    Spec("r", "requeue", "job", confirm=True, asks=("reason", "checkpoint")),
    Spec("x", "reject", "job", confirm=True),
    Spec("c", "cancel", "job", confirm=True),
    Spec("p", "reprioritize", "job", asks=("priority",)),
    Spec("P", "pause", "factory", confirm=True, asks=("reason",)),
    Spec("U", "resume", "factory", asks=("reason",)),
    Spec("D", "drain", "factory", confirm=True, asks=("reason",)),
    Spec("R", "restart-engine", "factory", confirm=True, asks=("reason",)),
    Spec("b", "budget pause", "product", confirm=True, asks=("reason",)),
    Spec("B", "budget resume", "product", asks=("reason",)),
)
ACTIONS: dict[str, Spec] = {spec.key: spec for spec in SPECS}

Subject = JobRow | FactoryRow | str  # a job, a factory, or the product's name


@dataclass(frozen=True)
class Prompt:
    question: Question
    text: str


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]


Ask = Callable[[Prompt], str | None]  # the operator's answer; None: cancelled (Esc)


def subject_id(subject: Subject) -> str:
    return subject if isinstance(subject, str) else subject.id


def describe(spec: Spec, subject: Subject) -> str:
    """``cancel j1 (its title) [building]``, ``drain factory f1``, ``budget pause of demo``."""
    if isinstance(subject, JobRow):
        title = f" ({subject.title[:40]})" if subject.title else ""
        return f"{spec.name} {subject.id}{title} [{subject.stage}]"
    if isinstance(subject, FactoryRow):
        return f"{spec.name} factory {subject.id}"
    return f"{spec.name} of {subject}"


def question(spec: Spec, subject: Subject, asked: Question) -> Prompt:
    what = describe(spec, subject)
    if asked == "priority":
        now = subject.priority if isinstance(subject, JobRow) else None
        current = f", now {now}" if now is not None else ""
        return Prompt(asked, f"{what}: new priority 0-9 (9 most urgent{current}): ")
    if asked == "reason":
        return Prompt(asked, f"{what}: reason (empty: '{REASON}'): ")
    if asked == "checkpoint":
        return Prompt(asked, f"{what}: checkpoint as a JSON object (empty: none): ")
    return Prompt(asked, f"{what}? y/N ")


def confirm_prompt(action: str, job: JobRow) -> str:
    """The confirmation asked before a job action."""
    return question(Spec("", action, "job", confirm=True), job, "confirm").text.rstrip()


def parse_priority(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() and 0 <= int(value) <= 9 else None


def parse_checkpoint(text: str) -> dict[str, Any] | None:
    """The checkpoint the operator typed (None: none); ``ValueError`` when it is not a JSON
    object."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the checkpoint is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError("the checkpoint must be a JSON object")
    return value


def request_for(spec: Spec, subject: Subject, answers: Mapping[Question, Any]) -> Request:
    """The request an action sends, from the operator's (parsed) answers."""
    sid = quote(subject_id(subject), safe="")
    reason = answers.get("reason") or REASON
    if spec.target == "job":
        if spec.name == "reprioritize":
            body: dict[str, Any] = {"priority": answers["priority"], "reason": reason}
        else:
            body = {"reason": reason}
            if answers.get("checkpoint") is not None:
                body["checkpoint"] = answers["checkpoint"]
        return Request("POST", f"{JOBS}/{sid}/{spec.name}", body)
    if spec.target == "factory":
        return Request(
            "POST", f"{FACTORIES}/{sid}/commands", {"command": spec.name, "reason": reason}
        )
    verb = spec.name.removeprefix("budget ")
    return Request("POST", f"{BUDGETS}/{sid}/{verb}", {"reason": reason})


def done_line(spec: Spec, subject: Subject, reply: Any) -> str:
    """The status line after the coordinator accepted the action."""
    sid = subject_id(subject)
    reply = reply if isinstance(reply, Mapping) else {}
    if spec.target == "job":
        job = reply.get("job", reply)
        job = job if isinstance(job, Mapping) else {}
        if spec.name == "reprioritize":
            priority = job.get("priority")
            return f"reprioritize {sid}: done" + (
                f", priority {priority}" if priority is not None else ""
            )
        stage = job.get("stage")
        return f"{spec.name} {sid}: done" + (f", now {stage}" if stage else "")
    if spec.target == "factory":
        command = reply.get("command")
        cid = command.get("id") if isinstance(command, Mapping) else None
        issued = f" (command {cid})" if cid else ""
        return f"{spec.name} {sid}: sent{issued}; the factory acts on its next heartbeat"
    paused, auto = reply.get("paused"), reply.get("autoPaused")
    state = "paused" if paused else "resumed" if paused is False else "done"
    still = " (still auto-paused: the ceiling is reached)" if auto and not paused else ""
    return f"{spec.name} of {sid}: done, {state}{still}"


def send(client: TopClient, spec: Spec, subject: Subject, request: Request) -> str:
    """Send the request; the status line (never raises on an HTTP or transport error)."""
    try:
        reply = client.post(request.path, request.body)
    except Exception as exc:
        return f"{spec.name} {subject_id(subject)} failed: {describe_error(exc)}"
    return done_line(spec, subject, reply)


@dataclass(frozen=True)
class Outcome:
    status: str
    sent: bool  # a request went out (the board should refresh)


def run_action(client: TopClient, spec: Spec, subject: Subject, ask: Ask) -> Outcome:
    """Ask what the action needs, then confirm if it is destructive, then send it."""
    sid = subject_id(subject)
    not_done = Outcome(f"{spec.name} {sid}: not done", sent=False)
    answers: dict[Question, Any] = {}
    for asked in spec.asks:
        answer = ask(question(spec, subject, asked))
        if answer is None:
            return not_done
        if asked == "priority":
            priority = parse_priority(answer)
            if priority is None:
                return Outcome(f"{spec.name} {sid}: {answer.strip()!r} is not 0-9; not sent", False)
            answers["priority"] = priority
        elif asked == "checkpoint":
            try:
                answers["checkpoint"] = parse_checkpoint(answer)
            except ValueError as exc:
                return Outcome(f"{spec.name} {sid}: {exc}; not sent", sent=False)
        else:
            answers["reason"] = answer.strip()[:REASON_MAX]
    if spec.confirm:
        answer = ask(question(spec, subject, "confirm"))
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            return not_done
    request = request_for(spec, subject, answers)
    return Outcome(send(client, spec, subject, request), sent=True)


def act(client: TopClient, action: JobAction, job_id: str, reason: str = REASON) -> str:
    """Ship, requeue, reject or cancel a job at once; the status line."""
    spec = next(s for s in SPECS if s.name == action and s.target == "job")
    job = JobRow(job_id, "", "?", None, 0, None, False, False)
    return send(client, spec, job, request_for(spec, job, {"reason": reason}))
