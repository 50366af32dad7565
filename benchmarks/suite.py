"""Wall time of the test suite (fast tier and everything) at several commits, back to back.

    python benchmarks/suite.py --commits=17955fc,HEAD [--tiers=fast,full] [--json=OUT]

Each commit is cloned from this checkout into a temporary directory and run with
the README's commands (`-n 2 --dist loadfile`, the fast tier with -m "not slow"),
one after another, so the figures share the machine's state. Run it on an idle
machine: it measures whatever else is running too. Prints one markdown row per
(commit, tier) with the CPU model, date and commit, for docs/benchmarks.md.
"""

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import throughput  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
TIERS = {"fast": ["-m", "not slow"], "full": []}


def run_tier(checkout: pathlib.Path, tier: str) -> dict:
  cmd = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile",
         "-p", "no:cacheprovider", *TIERS[tier], "tests"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
  wall = time.perf_counter() - start
  summary = (proc.stdout.strip().splitlines() or [""])[-1]
  counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|error|skipped)",
                                                   summary))
  return {"tier": tier, "wall_s": round(wall, 1), "returncode": proc.returncode,
          "summary": summary, **counts}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--commits", default="HEAD", help="comma-separated commits, run in order")
  p.add_argument("--tiers", default="fast,full")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  cpu = throughput.cpu_info()
  throughput.print_cpu(cpu)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for commit in args.commits.split(","):
      sha = subprocess.check_output(["git", "rev-parse", "--short", commit], cwd=REPO,
                                    text=True).strip()
      checkout = pathlib.Path(tmp) / sha
      subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
      subprocess.run(["git", "checkout", "-q", sha], cwd=checkout, check=True)
      for tier in args.tiers.split(","):
        result = dict(run_tier(checkout, tier), commit=sha)
        results.append(result)
        print(f"{sha} {tier}: {result['wall_s']} s ({result['summary']})", flush=True)
  today = datetime.date.today().isoformat()
  print("\n| commit | tier | wall | tests | CPU | date |\n|---|---|---|---|---|---|")
  for r in results:
    print(f"| {r['commit']} | {r['tier']} | {r['wall_s']:.0f} s | {r['summary']} | "
          f"{cpu['model']} ({os.cpu_count()} cores) | {today} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"cpu": cpu, "results": results}, indent=1))
  return results


if __name__ == "__main__":
  main()
