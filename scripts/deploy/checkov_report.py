"""Judge a checkov JSON report: print every result that matters and fail CI when it should.

    checkov -d infra --framework bicep -o json > report.json
    python scripts/deploy/checkov_report.py report.json

Fails (exit 1) on any failed check, any file checkov could not parse, any skipped check
without a reason (``#checkov:skip=CKV_X: <reason>`` in the template), or a report that
checked nothing. Prints the counts, then each failure and each waiver with its reason.
Standard library only: it runs under any Python.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_REASON = "No comment provided"  # what checkov records for a skip without one


@dataclass
class Verdict:
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems

    def lines(self) -> list[str]:
        out = [
            f"checkov: {self.passed} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped (waived in the templates)"
        ]
        out += [f"FAILED  {line}" for line in self.failed]
        out += [f"skipped {line}" for line in self.skipped]
        out += [f"ERROR   {line}" for line in self.problems]
        return out


def _where(check: dict[str, Any]) -> str:
    lines = check.get("file_line_range") or [0, 0]
    path = str(check.get("file_path", "?")).lstrip("/")
    return f"{check.get('check_id')} {check.get('resource')} ({path}:{lines[0]})"


def evaluate(report: Any) -> Verdict:
    """The verdict on checkov's ``-o json`` output (one report, or a list of them)."""
    reports = report if isinstance(report, list) else [report]
    verdict = Verdict()
    for one in reports:
        summary = one.get("summary", one)
        results = one.get("results", {})
        verdict.passed += len(results.get("passed_checks", []))
        for check in results.get("failed_checks", []):
            verdict.failed.append(f"{_where(check)}: {check.get('check_name')}")
        for check in results.get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment") or NO_REASON
            reason = reason.strip()
            verdict.skipped.append(f"{_where(check)}: {reason}")
            if not reason or reason == NO_REASON:
                verdict.problems.append(f"{_where(check)} is skipped without a reason")
        if summary.get("parsing_errors"):
            files = ", ".join(one.get("results", {}).get("parsing_errors", [])) or "?"
            verdict.problems.append(f"checkov could not parse: {files}")
    if verdict.passed + len(verdict.failed) + len(verdict.skipped) == 0:
        verdict.problems.append("checkov checked nothing: no resources found")
    return verdict


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: checkov_report.py REPORT.json", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text(encoding="utf-8")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"not a checkov JSON report ({exc}): {text[:300]!r}", file=sys.stderr)
        return 1
    verdict = evaluate(report)
    print("\n".join(verdict.lines()))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
