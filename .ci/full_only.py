"""How much of the code only the full profile takes did the rehearsal execute?

    python .ci/full_only.py COVDIR [--min-lines N]

COVDIR holds the coverage data files that `.ci/notebooks.sh` wrote, one per chapter and profile
(`.coverage.smoke.NN_name`, `.coverage.full.NN_name`). A line of `dlbook` is *full-only* when the
full-profile rehearsal of some chapter executed it and no chapter's smoke run did: that is what a
rehearsal adds over the smoke runs, and what would go untested if it skipped the full branches.
Printed: per chapter, the full-only lines its rehearsal executed; per module, the full-only lines
executed out of the lines no smoke run reaches (dlbook/config.py, the rehearsal's own code, does
not count for a chapter). Some full-only branches live in the notebooks, which coverage of dlbook
cannot see (chapter 03's extra masking rates, D11c): so the rehearsal's outputs
(COVDIR/out/NN_name.full.ipynb) are also searched for what a chapter prints when it takes the
non-full branch ("see the full profile", "needs the full profile", "full profile only", ...).

Exit 1 if no chapter's rehearsal executed a full-only line of dlbook, if a chapter adds fewer
than `--min-lines` (default 0), or if a rehearsal printed a non-full placeholder.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from coverage import Coverage, CoverageData


MECHANISM = "dlbook/config.py"


def lines(path: Path) -> dict[str, set[int]]:
    data = CoverageData(basename=str(path))
    data.read()
    return {f: set(data.lines(f) or ()) for f in data.measured_files()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("covdir", type=Path)
    ap.add_argument("--min-lines", type=int, default=0)
    a = ap.parse_args(argv)
    runs = {"smoke": {}, "full": {}}
    for f in sorted(a.covdir.glob(".coverage.*.*")):
        profile, chapter = f.name[len(".coverage."):].split(".", 1)
        if profile in runs:
            runs[profile][chapter] = lines(f)
    if not runs["full"]:
        print(f"full_only: no rehearsal data (.coverage.full.*) in {a.covdir}")
        return 1
    smoke = defaultdict(set)
    for per_file in runs["smoke"].values():
        for f, ls in per_file.items():
            smoke[f] |= ls
    full = defaultdict(set)
    print("full-only lines of dlbook (executed by the rehearsal, by no smoke run), per chapter:")
    bad = []
    for chapter, per_file in sorted(runs["full"].items()):
        # the rehearsal's own machinery (dlbook/config.py) does not count as the chapter's full path
        own = sum(len(ls - smoke[f]) for f, ls in per_file.items() if not f.endswith(MECHANISM))
        for f, ls in per_file.items():
            full[f] |= ls
        print(f"  {chapter:36s} {own:5d}")
        if own < a.min_lines:
            bad.append(chapter)
    # statements per module, to say what share of the lines no smoke run reaches were rehearsed
    cov = Coverage(data_file=None)
    print("\nper module: full-only lines executed / statements no smoke run executes")
    tot_new = tot_unreached = 0
    root = Path(__file__).resolve().parent.parent
    for f in sorted(set(full) | set(smoke)):
        try:
            _, statements, _, _, _ = cov.analysis2(f)
        except Exception:  # a file that is gone or not Python
            continue
        unreached = set(statements) - smoke[f]
        new = full[f] - smoke[f]
        tot_new += len(new)
        tot_unreached += len(unreached)
        if unreached:
            name = Path(f).resolve().relative_to(root) if Path(f).resolve().is_relative_to(root) else f
            print(f"  {str(name):36s} {len(new):5d} / {len(unreached):5d}")
    share = tot_new / tot_unreached if tot_unreached else 1.0
    print(f"  {'total':36s} {tot_new:5d} / {tot_unreached:5d}  ({share:.0%} of the lines smoke never "
          f"reaches were executed by a rehearsal)")
    placeholders = non_full_outputs(a.covdir / "out")
    for where, text in placeholders:
        print(f"full_only: {where} printed a non-full placeholder under the rehearsal: {text!r}")
    if bad:
        print(f"full_only: the rehearsal of {', '.join(bad)} executed fewer than {a.min_lines} full-only "
              "line(s): it did not take the full profile's code paths")
    if tot_new == 0:
        print("full_only: the rehearsals executed no line of dlbook that smoke does not: not the full path")
    return 1 if (bad or placeholders or tot_new == 0) else 0


# What a chapter prints where it takes the branch for the other profiles.
PLACEHOLDER = re.compile(r"(?:see|needs?|under|with) the full profile|full profile only|"
                         r"under the full profile only|the full profile runs", re.I)


def non_full_outputs(out: Path) -> list[tuple[str, str]]:
    found = []
    for nb in sorted(out.glob("*.full.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for i, c in enumerate(cells):
            for o in c.get("outputs", []):
                texts = [o.get("text", "")] + [v for k, v in o.get("data", {}).items()
                                               if k in ("text/plain", "text/markdown", "text/html")]
                for t in texts:
                    t = "".join(t) if isinstance(t, list) else t
                    for m in PLACEHOLDER.finditer(t):
                        line = t[t.rfind("\n", 0, m.start()) + 1:t.find("\n", m.end()) % (len(t) + 1)]
                        found.append((f"{nb.name.split('.')[0]} cell {i}", line.strip()[:140]))
    return found


if __name__ == "__main__":
    sys.exit(main())
