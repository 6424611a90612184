"""``python -m benchmarks`` (``make bench``): every benchmark on one fresh local stack, each
part's own tables, then one combined table; JSON per part plus a combined file with the
machine (benchmarks/results/, git-ignored). benchmarks/README.md explains every figure.

Parts run in this order: the claim storm, dispatch latency, idle cost, the lifecycle, the
timer ticks (10 and 100 idle products, and a lease's expiry among them), and the scale curve
last on the stack (its 11,000 seeded jobs slow every later query on the emulator, which
filters the whole container on each one). Then, once the stack is stopped, the parts that need
none (``NEEDS_STACK = False``): learned routing, a seeded simulation on the in-memory twin.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import (
    claim_storm,
    dispatch_latency,
    idle_cost,
    lifecycle,
    routing,
    scale_curve,
    timer_ticks,
)
from benchmarks.common import (
    RESULTS,
    BenchError,
    PartResult,
    Target,
    machine,
    machine_line,
    on_stack,
    say,
    table,
    write_json,
)

PARTS: dict[str, ModuleType] = {
    "storm": claim_storm,
    "dispatch": dispatch_latency,
    "idle": idle_cost,
    "lifecycle": lifecycle,
    "ticks": timer_ticks,
    "scale": scale_curve,
    "routing": routing,
}


def _parts(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}; got {text!r}")
    return [n for n in PARTS if n in names]  # always in the documented order


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Every agent-fleet benchmark on one local stack, one combined table. "
        "Each part's own sizes: python -m benchmarks.<claim_storm|dispatch_latency|"
        "idle_cost|lifecycle|timer_ticks|scale_curve|routing> --help.",
    )
    p.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        help=f"parts to run, comma-separated ({','.join(PARTS)})",
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes everywhere (a smoke run, ~3 min)"
    )
    p.add_argument(
        "--external",
        action="store_true",
        help="use the running emulators named by FLEET_*_PORT and FLEET_OPERATOR_TOKEN",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS, help=f"JSON files ({RESULTS})")
    return p


def part_args(module: ModuleType, quick: bool, out_dir: Path, name: str) -> Any:
    argv = [*(module.QUICK if quick else []), "--out", str(out_dir / f"{name}.json")]
    return module.parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    began = time.perf_counter()
    done: list[tuple[str, PartResult, float]] = []
    failed: list[tuple[str, str]] = []

    def run_parts(target: Target | None, names: list[str]) -> None:
        for name in names:
            module = PARTS[name]
            parsed = part_args(module, args.quick, args.out_dir, module.__name__.split(".")[-1])
            say(f"{name}: {module.__name__}")
            started = time.perf_counter()
            try:
                result = module.measure(target, parsed, say)
            except BenchError as exc:  # the other parts still run
                say(f"{name} failed: {exc}")
                failed.append((name, str(exc)))
                continue
            done.append((name, result, time.perf_counter() - started))

    stackless = [n for n in args.only if not getattr(PARTS[n], "NEEDS_STACK", True)]
    stacked = [n for n in args.only if n not in stackless]
    if stacked:  # no stack is started for stackless parts alone
        code = on_stack(args.external, lambda target: run_parts(target, stacked))
        if code:
            return code
    run_parts(None, stackless)
    info = machine()
    info["wall_seconds"] = round(time.perf_counter() - began, 1)
    rows: list[list[str]] = []
    combined: dict[str, Any] = {}
    for name, result, seconds in done:
        print(result.report(info))
        payload = result.payload(info)
        payload["wall_seconds"] = round(seconds, 1)
        write_json(args.out_dir / f"{result.name}.json", payload)
        combined[result.name] = {k: v for k, v in payload.items() if k != "machine"}
        rows += [[name, figure, value] for figure, value in result.summary()]
    rows += [[name, "FAILED", why] for name, why in failed]
    print(f"agent-fleet benchmarks - {machine_line(info)}, wall {info['wall_seconds']} s")
    print(table(["part", "figure", "value"], rows, numbers_right=False))
    summary = [{"part": p, "figure": f, "value": v} for p, f, v in rows]
    out = args.out_dir / "bench.json"
    write_json(
        out,
        {
            "benchmark": "all",
            "machine": info,
            "quick": args.quick,
            "summary": summary,
            "parts": combined,
        },
    )
    print(f"JSON: {args.out_dir}/{{{','.join(r.name for _, r, _ in done)},bench}}.json")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
