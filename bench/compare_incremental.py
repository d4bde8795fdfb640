"""Scheduled builds of this tree's dbt project against another version's, rounds alternating.

    .venv/bin/python bench/compare_incremental.py --compare-tree DIR [--rounds 5]
        [--deliveries 100000] [--corpus production|worst]

DIR holds another version of the project (for example ``git worktree add --detach DIR <commit>``
or ``git archive <commit> | tar -x -C DIR``). Both run on the same cached raw data as
bench/marts.py (bench/out/data; written there first if missing): each is full-built once on the
base history (cached per project fingerprint), then every round, for each project in turn (the
order alternating), the built warehouse is copied into place and three scheduled builds run:
start-up (`dbt build` selecting no node), incremental (`dbt build` after the same 1,000 more
deliveries in a new load) and no new data (`dbt build` again). Alternating rounds share out the
other load of a shared machine; CPU time (user+sys) is less disturbed by it than wall time.

Prints median [min-max] wall and median CPU per project and scenario, the ratios this / other,
and each node's median time in the incremental build. The JSON goes to
bench/out/compare-incremental-*.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import marts as bench

SCENARIOS = ("startup", "incremental", "noop")


def use(name: str, tree: Path) -> None:
    """Point bench/marts.py's dbt runner at project ``name`` (a frozen copy of ``tree``)."""
    bench.ROOT = tree
    bench.PROJECT = bench.OUT / f"project-{name}"
    bench.TARGET = bench.WORK / f"target-{name}"
    bench.LOGS = bench.WORK / f"logs-{name}"


def built_warehouse(name: str, tree: Path, base: Path) -> Path:
    """The base history full-built by this project, cached by the project's fingerprint."""
    use(name, tree)
    fingerprint = bench.snapshot_project()
    built = bench.DATA / f"built-{base.stem}-{fingerprint}.duckdb"
    if not built.exists():
        bench.place(base)
        bench.log(f"{name} ({fingerprint}): dbt build --full-refresh")
        result = bench.dbt(["build", *bench.SCHEDULED_BUILD, "--full-refresh"])
        if result["returncode"] != 0:
            raise SystemExit(f"the full build of {tree} failed:\n{result.get('output_tail')}")
        shutil.copyfile(bench.WAREHOUSE, built)
    return built


def median_nodes(runs: list[dict]) -> dict[str, float]:
    nodes: dict[str, list[float]] = {}
    for run in runs:
        for node, timing in run["nodes"].items():
            nodes.setdefault(node, []).append(timing["seconds"])
    return {node: statistics.median(seconds) for node, seconds in nodes.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--corpus", choices=("production", "worst"), default="production")
    parser.add_argument("--increment", type=int, default=1_000)
    args = parser.parse_args()
    # the corpus parameters bench/marts.py uses by default, so its cached files are shared
    corpus = argparse.Namespace(
        deliveries=args.deliveries,
        flags=50,
        corpus=args.corpus,
        identities=max(1, args.deliveries // 5),
        environments=3,
        seed=0,
        mean_interval=45.0,
    )
    bench.WORK.mkdir(parents=True, exist_ok=True)
    stream = bench.ensure_stream(corpus, 2 * args.deliveries + args.increment)
    base = bench.ensure_base(corpus, stream, args.deliveries)
    trees = {"this": bench.ROOT, "other": args.compare_tree.resolve()}
    built = {name: built_warehouse(name, tree, base) for name, tree in trees.items()}
    runs: dict[str, dict[str, list[dict]]] = {name: {s: [] for s in SCENARIOS} for name in trees}
    for number in range(args.rounds):
        order = ("this", "other") if number % 2 == 0 else ("other", "this")
        for name in order:
            use(name, trees[name])
            bench.place(built[name])
            runs[name]["startup"].append(
                bench.dbt(["build", "--select", "tag:bench_selects_nothing"])
            )
            bench.append_increment(stream, args.deliveries, args.increment, load_number=number)
            runs[name]["incremental"].append(bench.dbt(["build", *bench.SCHEDULED_BUILD]))
            runs[name]["noop"].append(bench.dbt(["build", *bench.SCHEDULED_BUILD]))
            bench.log(
                f"round {number + 1} {name}: "
                + ", ".join(
                    f"{s} {runs[name][s][-1]['seconds']:.2f}s (cpu "
                    f"{runs[name][s][-1]['cpu_seconds']:.2f}s)"
                    for s in SCENARIOS
                )
            )
    lines = [
        f"this tree {trees['this']} against {trees['other']}: {args.corpus} corpus, "
        f"{args.deliveries:,} deliveries + {args.increment:,}, {args.rounds} rounds alternating",
        f"{'scenario':<12} {'tree':<6} {'wall median [min-max]':<26} {'cpu median':>10}",
    ]
    medians: dict[tuple[str, str, str], float] = {}
    for scenario in SCENARIOS:
        for name in trees:
            wall = [r["seconds"] for r in runs[name][scenario]]
            cpu = [r["cpu_seconds"] for r in runs[name][scenario]]
            medians[scenario, name, "wall"] = statistics.median(wall)
            medians[scenario, name, "cpu"] = statistics.median(cpu)
            lines.append(
                f"{scenario:<12} {name:<6} {statistics.median(wall):7.2f}s "
                f"[{min(wall):.2f}-{max(wall):.2f}]{'':<6} {statistics.median(cpu):9.2f}s"
            )
    lines.append("ratio this / other (medians):")
    for scenario in SCENARIOS:
        wall = medians[scenario, "this", "wall"] / medians[scenario, "other", "wall"]
        cpu = medians[scenario, "this", "cpu"] / medians[scenario, "other", "cpu"]
        lines.append(f"  {scenario:<12} wall {wall:.3f}  cpu {cpu:.3f}")
    for name in trees:
        nodes = median_nodes(runs[name]["incremental"])
        models = sum(v for k, v in nodes.items() if k.startswith("model."))
        tests = sum(v for k, v in nodes.items() if k.startswith("test."))
        lines.append(
            f"{name}: incremental build, {len(nodes)} nodes, models {models:.2f}s, "
            f"tests {tests:.2f}s (sums of node medians); slowest:"
        )
        for node, seconds in sorted(nodes.items(), key=lambda kv: -kv[1])[:8]:
            lines.append(f"    {seconds:6.3f}s  {bench.short(node)}")
    text = "\n".join(lines)
    out = bench.OUT / f"compare-incremental-{datetime.now():%Y%m%dT%H%M%S}.json"
    for per_tree in runs.values():
        for scenario_runs in per_tree.values():
            for run in scenario_runs:
                run.pop("output_tail", None)
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "report": text}, default=str))
    print(text)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
