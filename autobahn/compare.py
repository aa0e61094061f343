#!/usr/bin/env python3
"""Compare an Autobahn report with autobahn/expected-results.json.

usage: compare.py ROLE REPORT_DIR EXPECTED_JSON

The expected file maps role -> case -> {"behavior": .., "behaviorClose": ..}. Only cases
whose expected result is not OK are listed; every other case must be OK (behavior OK or
INFORMATIONAL where the suite marks a case informational, and behaviorClose OK or
INFORMATIONAL). A case that does worse than expected is a regression (exit 1); one that
does better is reported so the file can be tightened. AUTOBAHN_UPDATE=1 rewrites the
role's entry from this run.
"""

import json
import os
import sys

ORDER = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "WRONG CODE": 1, "UNIMPLEMENTED": 2,
         "FAILED BY CLIENT": 2, "UNCLEAN": 3, "FAILED": 3}


def load_report(outdir):
    with open(os.path.join(outdir, "index.json")) as f:
        index = json.load(f)
    results = {}
    for agent, cases in index.items():
        for case, r in cases.items():
            results[case] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    return results


def key(case):
    return tuple(int(x) for x in case.split("."))


def main():
    role, outdir, expected_path = sys.argv[1:4]
    try:
        results = load_report(outdir)
    except (OSError, ValueError) as e:
        print(f"autobahn {role}: no report in {outdir}: {e}")
        return 1
    try:
        with open(expected_path) as f:
            expected_all = json.load(f)
    except FileNotFoundError:
        expected_all = {}
    expected = expected_all.get(role, {})
    regressions, improvements = [], []
    for case in sorted(results, key=key):
        got = results[case]
        want = expected.get(case, {"behavior": "OK", "behaviorClose": "OK"})
        for field in ("behavior", "behaviorClose"):
            g, w = ORDER.get(got[field], 3), ORDER.get(want[field], 3)
            if g > w:
                regressions.append(f"{case} {field}: expected {want[field]}, got {got[field]}")
            elif g < w:
                improvements.append(f"{case} {field}: expected {want[field]}, got {got[field]}")
    want_total = int(os.environ.get("AUTOBAHN_EXPECT_TOTAL", "0"))
    if len(results) < want_total:
        regressions.append(f"only {len(results)} of {want_total} cases were reported")
    counts = {}
    for r in results.values():
        counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"autobahn {role}: {len(results)} cases: {summary}")
    for line in improvements:
        print(f"  better than expected: {line}")
    for line in regressions:
        print(f"  REGRESSION: {line}")
    if os.environ.get("AUTOBAHN_UPDATE") == "1":
        expected_all[role] = {c: r for c, r in sorted(results.items(), key=lambda kv: key(kv[0]))
                              if ORDER.get(r["behavior"], 3) or ORDER.get(r["behaviorClose"], 3)}
        with open(expected_path, "w") as f:
            json.dump(expected_all, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"autobahn {role}: wrote {expected_path}")
        return 0
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
