"""Enrollments racing for one enrollment token, released together by a barrier: what the
token tests of single-use and of many-use tokens both run."""

from __future__ import annotations

import threading

from fleet.coordinator.tokens import Tokens
from fleet.errors import Unauthorized
from fleet.http.parsing import FactorySelf


def race_enrollments(
    tokens: Tokens, token: str, racers: int, view: FactorySelf
) -> tuple[list[str], list[str]]:
    """``racers`` threads enroll ``f0``, ``f1``, ... with ``token`` at once: the names that
    won, and the messages of the refusals (401s)."""
    start = threading.Barrier(racers)
    won: list[str] = []
    lost: list[str] = []

    def race(name: str) -> None:
        start.wait()
        try:
            won.append(tokens.enroll(token, name, view).factory_id)
        except Unauthorized as exc:
            lost.append(exc.message)

    threads = [threading.Thread(target=race, args=(f"f{i}",)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost
