"""Run every case of the bad-input corpus and print a markdown table: | case | exit | error line |.

    .venv/bin/python tests/bad_inputs/report.py            # all cases
    .venv/bin/python tests/bad_inputs/report.py collect/   # the cases whose id starts with collect/

Offline and self-contained: the embedded tiny model and the good inputs are built in a
temporary folder (ASTUNER_HOME too, unless set). Exit status 1 when a case fails its checks
(the table's last column then says why).
"""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AGENTSCOPE_DISABLE_CONSOLE_OUTPUT", "true")


def cell(text: str, tmp: str = "") -> str:
    """Markdown-safe, with the temporary folder shown as TMP and the repository's own paths relative."""
    text = text.replace(tmp, "TMP") if tmp else text
    return text.replace(str(HERE.parent.parent) + "/", "").replace("|", "\\|").replace("`", "'")


def main(prefixes: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="astuner-bad-inputs-") as tmp:
        os.environ.setdefault("ASTUNER_HOME", str(Path(tmp) / "home"))
        from corpus import CASES
        from harness import build_world, run_case

        cases = [c for c in CASES if not prefixes or c.id.startswith(tuple(prefixes))]
        print(f"building the good inputs, then {len(cases)} cases ...", file=sys.stderr, flush=True)
        world = build_world(Path(tmp) / "world")
        failed = 0
        rows = []
        for i, case in enumerate(cases):
            outcome = run_case(case, world, Path(tmp) / "cases" / str(i))
            failed += bool(outcome.problems)
            status = "ok" if not outcome.problems else "FAILED: " + "; ".join(outcome.problems)
            print(f"{case.id}: {status}", file=sys.stderr, flush=True)
            rows.append(
                f"| {case.id} | {case.command} | {outcome.result.rc} | `{cell(outcome.error_line or '(none)', tmp)}` |"
                + (f" {cell(status, tmp)} |" if outcome.problems else "")
            )
    print("| case | command | exit | error line |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{len(cases)} cases, {len(cases) - failed} pass their checks, {failed} fail", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
