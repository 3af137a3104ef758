"""Two weeks of live traffic in which one label's cases change phrasing: the shadow audit finds the
gate's loss of precision, the gate stops serving that label, and serves it again once retrained.

Each day, `per_day` cases from the sample generator go through the enrichment path in micro-batches
(`pipeline.enrich_cases`: redaction, the gate, the LLM strategy over `LLMResource`) against the
OpenAI-compatible test server answering the TRUE label (2% wrong). From day 4, `drift_share` of the
`routing_error` cases are written differently: a case that reads like suspected fraud plus a line
saying it sits in the wrong queue. The first gate never saw that phrasing and labels them
`fraud_suspected`, confidently: without an audit nothing notices.

With the audit on, each micro-batch runs as `enriched/cases` does (`gate.health`): 5% of gated cases
plus 3 per label per day are also answered by the LLM, recorded in `models/gate_audits` (a Delta
table in a temporary folder), and the serving gate is judged per label after the batch; a label
shut off is decided by the LLM from the next micro-batch on. Between days the distillation runs as
the assets run it (LLM answers -> examples -> a candidate gate, judged on the held-out golden split
against the best gate so far); a new gate version serves every label again.

Printed: per day the calls per case (audits included), gated share, gated precision against the
true labels, audits, labels shut off; when `fraud_suspected`'s realized precision first fell under
the target and when the gate stopped serving it (micro-batches); the two weeks' gated precision;
then the same traffic with the audit off. Goals: gated precision over the two weeks >= 0.95 with the
audit, the shut-off within one micro-batch of the audits showing the label under target.

Run: `.venv/bin/python benchmarks/gate_live_precision.py [--days 14] [--per-day 300] [--batches 6]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402

from benchmarks.gate_distillation_week import MODEL, Embeddings, told_label, train  # noqa: E402
from llm_assets.domain.packs.payments_ops.sample_data import catalog  # noqa: E402
from llm_assets.domain.packs.payments_ops.sample_data.generator import case_text, kb_corpus  # noqa: E402
from llm_assets.gate import examples as ex  # noqa: E402
from llm_assets.gate import health  # noqa: E402
from llm_assets.gate.evaluation import labelled_set  # noqa: E402
from llm_assets.gate.retraining import best_of, gated_score, judge  # noqa: E402
from llm_assets.lib.redaction import redact_cached  # noqa: E402
from llm_assets.llm import llm_enricher, pipeline  # noqa: E402
from llm_assets.resources.delta import DeltaLakeStorage  # noqa: E402
from llm_assets.resources.llm import LLMResource  # noqa: E402
from tests.support.independent_cases import load_independent_cases  # noqa: E402
from tests.support.openai_test_server import OpenAITestServer  # noqa: E402

DRIFT_LABEL, LOOKS_LIKE = "routing_error", "fraud_suspected"
WRONG_QUEUE = ("Sent to us by mistake: this queue does not own it.", "Parked in the wrong team's backlog.",
               "Misfiled under our queue; another team owns this.", "Not ours: it was assigned to the wrong desk.")
GOAL_PRECISION = 0.95


def day_cases(day: int, per_day: int, seed: int, drift_share: float, drift_day: int) -> pl.DataFrame:
    rng = random.Random(seed * 1000 + day)
    rows = []
    for i in range(per_day):
        case = case_text(rng)
        text, drifted = case.text, False
        if case.label == DRIFT_LABEL and day >= drift_day and rng.random() < drift_share:
            lookalike = case_text(rng)
            while lookalike.label != LOOKS_LIKE:
                lookalike = case_text(rng)
            text, drifted = f"{lookalike.text} {rng.choice(WRONG_QUEUE)}", True
        rows.append({"event_id": f"d{day:02d}-{i:05d}", "event_date": f"2026-12-{day:02d}", "payload_raw": text,
                     "source_system": rng.choice(catalog.SOURCE_SYSTEMS), "partner_id": f"P-{rng.randint(1, 40):03d}",
                     "label": case.label, "drifted": drifted})
    return pl.DataFrame(rows)


def independent_score(gate, shut: set[str], embed: Embeddings) -> dict:
    """The gate on the independent corpus (`tests/support/independent_cases.jsonl`, written apart from the
    generator, never trained or calibrated on): gated share and gated precision, shut-off labels not gated."""
    cases = load_independent_cases()
    decisions = gate.decide(embed([redact_cached(c["text"]) for c in cases]))
    gated = [(d.label, c["label"]) for d, c in zip(decisions, cases) if d.gated and d.label not in shut]
    return {"cases": len(cases), "gated_share": len(gated) / len(cases),
            "gated_precision": sum(p == t for p, t in gated) / len(gated) if gated else None}


def simulate(*, audit: bool, days: int, per_day: int, batches: int, seed: int, wrong_share: float,
             drift_share: float, drift_day: int, embed: Embeddings) -> dict:
    resolved = kb_corpus()["resolved_cases"]
    lake = DeltaLakeStorage(root=tempfile.mkdtemp(prefix="gate-live-"))  # no golden table: the pack's seed cases
    calibration, held_out = labelled_set("calibration", lake), labelled_set("held_out", lake)
    held_vectors = embed([redact_cached(t) for t in held_out.texts])
    answers: dict[str, str] = {}
    server = OpenAITestServer(slots=16, model=MODEL, labelers={MODEL: lambda case: answers.get(case.strip()) or "other"}).start()
    enricher = llm_enricher.LLMEnricher(LLMResource(base_url=server.base_url, model=MODEL, max_concurrency=16))
    gate = train(embed, resolved, pl.DataFrame(schema=ex.EXAMPLES_SCHEMA), calibration, seed)
    stored = [(gate.version, gated_score(gate, held_vectors, held_out.labels))]
    independent_before = independent_score(gate, set(), embed)
    enriched: list[pl.DataFrame] = []
    texts: dict[str, str] = {}
    table, events = [], {}
    batch_no = 0
    try:
        for day in range(1, days + 1):
            cases = day_cases(day, per_day, seed, drift_share, drift_day)
            truth = dict(zip(cases["event_id"], cases["label"]))
            for event_id, text, label in cases.select("event_id", "payload_raw", "label").iter_rows():
                answers[redact_cached(text).strip()] = told_label(event_id, label, wrong_share)
                texts[event_id] = text
            date = cases["event_date"][0]
            rows, calls, audits, shut_seen = [], 0, 0, set()
            for part in range(batches):
                batch_no += 1
                chunk = cases[part * per_day // batches:(part + 1) * per_day // batches]
                shut = health.read_shutoffs(lake, gate.version) if audit else {}
                shut_seen |= set(shut)
                if LOOKS_LIKE in shut and "shut_off_batch" not in events:
                    events["shut_off_batch"] = (batch_no, day)
                if "shut_off_batch" in events and LOOKS_LIKE not in shut and "serves_again" not in events:
                    events["serves_again"] = (batch_no, day, gate.version)
                plan = health.plan_audits(lake, gate, [date]) if audit else None
                versions = pipeline.Versions(model_version=f"server:{MODEL}", prompt_version="bench",
                                             kb_index_version="none", gate_version=gate.version)
                run = pipeline.enrich_cases(chunk.drop("label", "drifted"), versions=versions, embed=embed, gate=gate,
                                            retrieve=lambda vectors: [[] for _ in range(len(vectors))], llm=enricher,
                                            shut_off=shut, audit=plan.select if plan else None)
                rows += run.rows
                calls += run.llm_calls
                audits += run.audited
                if audit:
                    target = health.gate_target(gate)
                    _, precision, _ = health.after_batch(lake, run.rows, gate.version, shut, gate.labels, target=target)
                    p = precision.get(LOOKS_LIKE)
                    if p and p.audited and p.precision < target and "point_under_batch" not in events:
                        events["point_under_batch"] = (batch_no, day, p.describe(target))
                    if p and p.below_target(target) and "upper_under_batch" not in events:
                        events["upper_under_batch"] = (batch_no, day, p.describe(target))
            gated = [r for r in rows if r["route"] == "gate"]
            correct = sum(r["label"] == truth[r["event_id"]] for r in gated)
            looks = [r for r in gated if r["label"] == LOOKS_LIKE]
            enriched.append(pipeline.rows_frame(rows, pipeline.ENRICHED_SCHEMA))
            selection = ex.select_examples(pl.concat(enriched), texts, pl.DataFrame())
            candidate = train(embed, resolved, selection.examples, calibration, seed)
            score = gated_score(candidate, held_vectors, held_out.labels)
            best = best_of(stored)
            verdict = judge(score, best[1] if best else None)
            table.append({"day": day, "cases": len(rows), "calls_per_case": calls / len(rows),
                          "gated_share": len(gated) / len(rows), "gated": len(gated), "correct": correct,
                          "looks_like_precision": (sum(r["label"] == truth[r["event_id"]] for r in looks) / len(looks)
                                                   if looks else None),
                          "audits": audits, "shut": sorted(shut_seen), "gate": gate.version,
                          "accepted": verdict.accepted})
            if verdict.accepted and candidate.version != gate.version:
                gate = candidate
                stored.append((candidate.version, score))
    finally:
        server.stop()
    total_gated = sum(t["gated"] for t in table)
    final_shut = set(health.read_shutoffs(lake, gate.version)) if audit else set()
    return {"table": table, "events": events, "independent_before": independent_before,
            "independent_after": independent_score(gate, final_shut, embed),
            "gated_precision": sum(t["correct"] for t in table) / total_gated if total_gated else None}


def show(name: str, result: dict) -> None:
    print(f"\n{name}")
    print(f"{'day':>3} {'calls/case':>10} {'gated share':>11} {'gated prec':>10} {LOOKS_LIKE + ' prec':>21} "
          f"{'audits':>6}  labels shut off (gate version)")
    for t in result["table"]:
        prec = t["correct"] / t["gated"] if t["gated"] else float("nan")
        looks = "-" if t["looks_like_precision"] is None else f"{t['looks_like_precision']:.3f}"
        print(f"{t['day']:>3} {t['calls_per_case']:>10.3f} {t['gated_share']:>11.3f} {prec:>10.3f} {looks:>21} "
              f"{t['audits']:>6}  {', '.join(t['shut']) or '-'} ({t['gate']})")
    print(f"gated precision over the {len(result['table'])} days: {result['gated_precision']:.4f}")
    for when in ("before", "after"):
        score = result[f"independent_{when}"]
        precision = "-" if score["gated_precision"] is None else f"{score['gated_precision']:.3f}"
        print(f"independent corpus ({score['cases']} cases), gate {when}: gated share {score['gated_share']:.3f}, "
              f"gated precision {precision}")
    for key, value in result["events"].items():
        print(f"  {key}: micro-batch {value[0]} (day {value[1]}){': ' + str(value[2]) if len(value) > 2 else ''}")


def main(days: int = 14, per_day: int = 300, batches: int = 6, seed: int = 11, wrong_share: float = 0.02,
         drift_share: float = 0.6, drift_day: int = 4) -> dict:
    started = time.perf_counter()
    embed = Embeddings()
    common = dict(days=days, per_day=per_day, batches=batches, seed=seed, wrong_share=wrong_share,
                  drift_share=drift_share, drift_day=drift_day, embed=embed)
    print(f"{days} days x {per_day} cases in {batches} micro-batches; from day {drift_day}, {drift_share:.0%} of "
          f"{DRIFT_LABEL} cases read like {LOOKS_LIKE}; the LLM answers the true label except {wrong_share:.0%}")
    with_audit = simulate(audit=True, **common)
    show("audit on (5% of gated cases + 3 per label per day, per-label shut-off)", with_audit)
    without = simulate(audit=False, **common)
    show("audit off (the gate as before: nothing measures its precision once it serves)", without)

    events = with_audit["events"]
    failed = []
    if with_audit["gated_precision"] < GOAL_PRECISION:
        failed.append(f"gated precision {with_audit['gated_precision']:.4f} < {GOAL_PRECISION}")
    if "upper_under_batch" not in events or "shut_off_batch" not in events:
        failed.append(f"{LOOKS_LIKE} was never shut off")
    elif events["shut_off_batch"][0] - events["upper_under_batch"][0] > 1:
        failed.append("the shut-off came more than one micro-batch after the audits showed the label under target")
    print(f"\naudit on vs off: gated precision {with_audit['gated_precision']:.4f} vs {without['gated_precision']:.4f}; "
          f"calls per case over the run {sum(t['calls_per_case'] for t in with_audit['table']) / days:.3f} vs "
          f"{sum(t['calls_per_case'] for t in without['table']) / days:.3f}")
    print(f"goals (gated precision >= {GOAL_PRECISION} with the audit; shut-off within one micro-batch): "
          + ("met" if not failed else "NOT met: " + "; ".join(failed)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return {"with_audit": with_audit, "without": without, "failed": failed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--per-day", type=int, default=300)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--drift-share", type=float, default=0.6)
    args = parser.parse_args()
    main(args.days, args.per_day, args.batches, args.seed, drift_share=args.drift_share)
