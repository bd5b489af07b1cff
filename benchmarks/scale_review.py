"""Session 21's scale review (docs/performance.md, "Session 21: the tool at scale"): the projects, states and
measurements behind its figures. Not part of ``make bench``.

Subcommands (run with the project's interpreter, ``.venv/bin/python benchmarks/scale_review.py ...``):

- ``project DIR CASES [--repeats K] [--clusters shipped|each|one]``: a project in DIR: ``pipeline.yaml`` with
  training and live traffic off, a 1 s bake and concurrency 16; the shipped golden set repeated to CASES
  cases with new ids (its suite widened to allow that); ``DIR/scale_model.py``, a python-kind model that
  answers at once. Then ``AGENT_RELEASE_HOME=DIR/.agent-release PYTHONPATH=DIR`` and, from DIR,
  ``python benchmarks/scale_review.py register DIR/.agent-release`` and ``agent-release run`` (timed with
  ``/usr/bin/time -v``).
- ``register HOME``: an approved champion package and a pending challenger of that model.
- ``grow HOME EXECUTIONS LEDGER``: copies HOME's latest execution (steps and evaluation rows) until there
  are EXECUTIONS, and appends ledger entries until there are LEDGER (``ExecutionStore``,
  ``save_evaluation_rows``, ``LocalBackend.append_audit``).
- ``gate HOME [--each]``: time and peak RSS of ``decide_promotion`` on HOME's stored evaluation (``--each``:
  every case its own cluster); a challenger scoring 1 on 30% of cases so the test is not degenerate.
- ``bootstrap CASES CLUSTERS mean|p95``: ``paired_cluster_bootstrap`` of CASES lognormal pairs.
- ``window``: median time of a canary look (``variant_metrics``) with 9,000 and 99,000 calls in the window,
  each look after 25 new calls.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_SOURCE = '''"""A chat-completions model that answers at once: an ORD- question gets one lookup_order call."""
import json


class LookupModel:
    def __init__(self, variant="v"):
        self.variant = variant

    def complete(self, request):
        last = request["messages"][-1]
        text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
        order = next((w.strip("?.,!") for w in str(text).split() if w.startswith("ORD-")), None)
        base = {"id": "x", "object": "chat.completion", "created": 0, "model": self.variant,
                "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}}
        if last["role"] == "tool" or order is None or not request.get("tools"):
            message = {"role": "assistant", "content": f"Order status: shipped. ({self.variant})"}
            return {**base, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        call = {"id": "call_1", "type": "function",
                "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order})}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {**base, "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
'''


def make_project(target: Path, cases: int, repeats: int, clusters: str) -> None:
    data = target / "datasets/support"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(ROOT / "datasets/support", data)
    base = [json.loads(line) for line in (ROOT / "datasets/support/golden.jsonl").read_text().splitlines()]
    rows = []
    for i in range(cases):
        row = {**base[i % len(base)], "id": f"S-{i:06d}"}
        if clusters != "shipped":
            row["cluster"] = row["id"] if clusters == "each" else "all"
        rows.append(row)
    (data / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = json.loads((data / "golden.suite.json").read_text())
    kept = []
    for e in suite["expectations"]:
        kwargs = e["kwargs"]
        if e["type"] == "expect_column_unique_value_count_to_be_between" and clusters == "one":
            continue  # a suite that does not count clusters
        if e["type"] == "expect_table_row_count_to_be_between":
            kwargs["max_value"] = 10**7
        if e["type"] == "expect_column_values_to_match_regex" and kwargs.get("column") == "id":
            kwargs["regex"] = r"^[A-Z]-\d{4,6}$"
        if e["type"] == "expect_column_values_to_be_between" and kwargs.get("column") == "cluster_size":
            kwargs.update(min_value=1, max_value=10**7)
        kept.append(e)
    suite["expectations"] = kept
    (data / "golden.suite.json").write_text(json.dumps(suite, indent=1))
    text = (ROOT / "pipeline.yaml").read_text()
    for old, new in [
        (
            "  enabled: true\n  data: datasets/support/train.jsonl",
            "  enabled: false\n  data: datasets/support/train.jsonl",
        ),
        ("  concurrency: 8 ", "  concurrency: 16 "),
        ("  repeats: 1\n", f"  repeats: {repeats}\n"),
        ("  bake_s: 10 ", "  bake_s: 1 "),
        ("  live_traffic:\n    enabled: true", "  live_traffic:\n    enabled: false"),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    (target / "pipeline.yaml").write_text(text)
    (target / "scale_model.py").write_text(MODEL_SOURCE)
    print(f"{target}: {cases} cases, repeats {repeats}, clusters {clusters}")


def register(home: Path) -> None:
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import ApprovalStatus, ModelSpec

    home.mkdir(parents=True, exist_ok=True)
    backend = LocalBackend(home)
    try:
        backend.ensure_package_group("support-model")
        for variant in ("champion", "challenger"):
            spec = ModelSpec(
                kind="python", options={"class_path": "scale_model:LookupModel", "init": {"variant": variant}}
            )
            package = backend.register_package("support-model", spec)
            if variant == "champion":
                backend.update_approval(package.arn, ApprovalStatus.APPROVED, "scale review")
    finally:
        backend.close()


def grow(home: Path, executions: int, ledger: int) -> None:
    from agent_release.pipelines.dag import pipeline_steps
    from agent_release.pipelines.evaluation_store import save_evaluation_rows
    from agent_release.pipelines.executor import ExecutionStore
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.evaluation_records import EvaluationReport

    store = ExecutionStore(home)
    source = store.latest()
    assert source is not None, "run one execution first"
    steps = store.steps(source["id"])
    evaluation = EvaluationReport.model_validate(store.step_output(source["id"], "evaluate_variants"))
    started = time.perf_counter()
    for _ in range(executions - len(store.recent(limit=executions))):
        new = store.create(
            source["pipeline"], Path(source["config_path"]), source["config_text"], pipeline_steps()
        )
        for s in steps:
            fields = {k: s[k] for k in ("started_at", "finished_at", "output_json", "error")}
            store.mark_step(new, s["name"], s["status"], **fields)
        store.finish(new, source["status"], decision=source["decision"])
        save_evaluation_rows(home, new, evaluation)
    older = [r["id"] for r in store.recent(limit=executions)][1:] or [source["id"]]
    backend = LocalBackend(home)
    for i in range(ledger - len(backend.list_audit())):
        action = "weights" if i % 3 else "reject"
        backend.append_audit(
            "pipeline", action, "support-agent/challenger", f"entry {i}", {"i": i}, older[i % len(older)]
        )
    print(f"grown in {time.perf_counter() - started:.1f} s")


def gate(home: Path, each: bool) -> None:
    import sqlite3

    from agent_release.pipelines.config import load_config
    from agent_release.steps.decide_promotion import decide_promotion
    from agent_release.steps.evaluation_records import EvaluationReport

    conn = sqlite3.connect(home / "state.db")
    sql = "SELECT output_json FROM steps WHERE name = 'evaluate_variants' AND output_json IS NOT NULL"
    data = json.loads(conn.execute(sql + " ORDER BY rowid DESC LIMIT 1").fetchone()[0])
    rng = random.Random(0)
    for row in data["rows"]:
        if each:
            row["cluster"] = row["case_id"]
        if row["role"] == "challenger" and rng.random() < 0.3:
            row["scores"]["task_success"] = 1.0
    report = EvaluationReport.model_validate(data)
    config = load_config(home.parent / "pipeline.yaml").config.decide
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    decision = decide_promotion(config, report)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"{time.perf_counter() - started:.2f} s, peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MB: {decision.reason}"
    )


def bootstrap(cases: int, clusters: int, statistic: str) -> None:
    import numpy as np

    from agent_release.steps.paired_stats import paired_cluster_bootstrap

    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(cases)]
    a = dict(zip(ids, rng.lognormal(0, 0.5, cases).tolist(), strict=True))
    b = dict(zip(ids, rng.lognormal(0, 0.5, cases).tolist(), strict=True))
    started = time.perf_counter()
    result = paired_cluster_bootstrap(
        a, b, {c: f"k{i % clusters}" for i, c in enumerate(ids)}, statistic=statistic
    )  # type: ignore[arg-type]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{time.perf_counter() - started:.2f} s, peak RSS {rss:.0f} MB, interval {result.ci_low:.6f}..{result.ci_high:.6f}"
    )


def window() -> None:
    from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend
    from agent_release.steps.backend import ModelSpec, VariantSpec

    backend = LocalBackend(Path(tempfile.mkdtemp()))
    model = ModelSpec(kind="python", options={"class_path": "x:Y"})
    backend.deploy_endpoint(
        "e",
        [
            VariantSpec(name="champion", model=model, initial_weight=0.9),
            VariantSpec(name="challenger", model=model, initial_weight=0.1),
        ],
    )
    since, rng, written = time.time() - 3600, random.Random(0), 0

    def calls(n: int, at: float, step: float) -> list[InvocationRecord]:
        return [
            InvocationRecord(
                "e",
                rng.choice(["champion", "challenger"]),
                at + i * step,
                200 if rng.random() > 0.02 else 500,
                rng.uniform(2, 40),
                0.5,
                False,
            )
            for i in range(n)
        ]

    for total in (9_000, 99_000):
        backend.record_invocations(calls(total - written, since + written * 0.03, 0.03))
        written = total
        backend.variant_metrics("e", since)
        looks = []
        for _ in range(10):
            backend.record_invocations(calls(25, since + written * 0.03, 0.001))
            written += 25
            started = time.perf_counter()
            backend.variant_metrics("e", since)
            looks.append(time.perf_counter() - started)
        print(f"{total} calls in the window: median look {statistics.median(looks) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("project")
    p.add_argument("dir", type=Path)
    p.add_argument("cases", type=int)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--clusters", choices=["shipped", "each", "one"], default="shipped")
    sub.add_parser("register").add_argument("home", type=Path)
    g = sub.add_parser("grow")
    g.add_argument("home", type=Path)
    g.add_argument("executions", type=int)
    g.add_argument("ledger", type=int)
    d = sub.add_parser("gate")
    d.add_argument("home", type=Path)
    d.add_argument("--each", action="store_true")
    b = sub.add_parser("bootstrap")
    b.add_argument("cases", type=int)
    b.add_argument("clusters", type=int)
    b.add_argument("statistic", choices=["mean", "p95"])
    sub.add_parser("window")
    args = parser.parse_args()
    if args.command == "project":
        args.dir.mkdir(parents=True, exist_ok=True)
        make_project(args.dir, args.cases, args.repeats, args.clusters)
    elif args.command == "register":
        register(args.home)
    elif args.command == "grow":
        grow(args.home, args.executions, args.ledger)
    elif args.command == "gate":
        gate(args.home, args.each)
    elif args.command == "bootstrap":
        bootstrap(args.cases, args.clusters, args.statistic)
    else:
        window()


if __name__ == "__main__":
    main()
