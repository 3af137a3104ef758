"""Golden-set evaluation of one model version through the production enrichment path; no Dagster.

`run_golden` sends the golden cases through `pipeline.enrich_cases`, exactly as `enriched/cases`
does (redaction, KB retrieval, the prompts of the version's call mode, structured outputs,
parsing with one re-ask, the fallback), with the version's own transport and generation
parameters. Two differences, both on purpose:
- an LLM version is asked about EVERY golden case (no embedding gate in front): the gate is a
  model of its own, versioned and checked apart, and would otherwise hide the LLM from its test;
  the local version is the rules plus the gate's classifier, so it runs with the gate as in production;
- no result cache: an evaluation measures the model, not what an earlier run stored.

`case_rows` turns the run into one row per golden case (the `models/evaluation` Delta table,
key `EVALUATION_KEY`), and `summarize` into the reported metrics.
"""

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np
import polars as pl

from llm_assets.domain import current_pack
from llm_assets.llm import pipeline
from llm_assets.lib.redaction import find_pii
from llm_assets.llm.types import CaseContext, CaseResult
from llm_assets.models.golden import GOLDEN_DAY
from llm_assets.models.registry import RegisteredModel
from llm_assets.models.statistics import label_metrics, macro_f1, percentile

# The Delta table's key, declared once: one row per model version and golden case.
EVALUATION_KEY = ("model_version", "event_id")
PARTITION_COLUMN = "model_version"
EVALUATION_SCHEMA = {
    "model_version": pl.String, "event_id": pl.String, "expected_label": pl.String, "label": pl.String,
    "label_correct": pl.Boolean, "confidence": pl.Float64, "severity": pl.Int32, "summary": pl.String, "actions": pl.String,
    "route": pl.String, "fallback_reason": pl.String, "valid_json": pl.Boolean, "actions_allowed": pl.Boolean,
    "pii_in_output": pl.List(pl.String), "latency_s": pl.Float64, "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64, "llm_calls": pl.Int32, "input_sha256": pl.String,
    "enriched_model_version": pl.String, "prompt_version": pl.String, "kb_index_version": pl.String,
    "gate_version": pl.String, "retrieved_doc_ids": pl.List(pl.String), "registry_fingerprint": pl.String,
    "golden_sha256": pl.String, "run_id": pl.String, "evaluated_at": pl.Datetime("us", "UTC"),
}


class RecordingLLM:
    """The pipeline's `llm` callable around an `LLMEnricher`: keeps each case's `CaseResult`
    (latency, tokens, dropped actions), which the enriched row does not carry."""

    def __init__(self, enricher: Callable[[Sequence[CaseContext]], list[CaseResult]]):
        self.enricher = enricher
        self.results: dict[str, CaseResult] = {}

    def __call__(self, cases: Sequence[CaseContext]) -> list[CaseResult]:
        results = self.enricher(cases)
        self.results.update({r.event_id: r for r in results})
        return results


@dataclass
class GoldenRun:
    run: pipeline.EnrichmentRun
    llm_results: dict[str, CaseResult]
    wall_s: float
    versions: pipeline.Versions
    extra: dict = field(default_factory=dict)


def run_golden(golden: pl.DataFrame, *, model: RegisteredModel, versions: pipeline.Versions,
               retrieve: pipeline.Retriever, embed: pipeline.Embedder, gate=None, gate_threshold: float | None = None,
               llm: RecordingLLM | None = None) -> GoldenRun:
    """The golden cases through `pipeline.enrich_cases` for `model` (see the module docstring)."""
    if model.uses_llm and llm is None:
        raise ValueError(f"{model.name} is an LLM version: give its transport's RecordingLLM")
    started = time.perf_counter()
    run = pipeline.enrich_cases(
        golden.drop("expected_label"), day=GOLDEN_DAY, versions=versions, retrieve=retrieve, embed=embed,
        gate=None if model.uses_llm else gate, gate_threshold=gate_threshold,
        llm=llm if model.uses_llm else None, cache_lookup=None)
    return GoldenRun(run=run, llm_results=dict(llm.results) if llm else {}, wall_s=time.perf_counter() - started,
                     versions=versions)


def _actions_allowed(actions_json: str | None, dropped: int) -> bool:
    actions = json.loads(actions_json or "[]")
    pack = current_pack()
    return dropped == 0 and len(actions) <= pack.max_actions and all(
        a.get("action") in pack.action_verbs and a.get("approval_level") in pack.approval_levels
        for a in actions)


def case_rows(golden: pl.DataFrame, result: GoldenRun, model: RegisteredModel, *, golden_sha256: str,
              run_id: str, evaluated_at: datetime | None = None) -> pl.DataFrame:
    """One `models/evaluation` row per golden case."""
    expected = dict(golden.select("event_id", "expected_label").iter_rows())
    evaluated_at = evaluated_at or datetime.now(timezone.utc)
    out = []
    for row in result.run.rows:
        answer = result.llm_results.get(row["event_id"])
        # A schema-valid answer: the LLM's answer parsed (after at most one re-ask); the rules of the
        # local version always produce one. A fallback row had none (whatever the failure).
        valid = row["route"] != "fallback" and (not model.uses_llm or row["route"] == "llm")
        out.append({
            "model_version": model.name, "event_id": row["event_id"], "expected_label": expected[row["event_id"]],
            "label": row["label"], "label_correct": row["label"] == expected[row["event_id"]],
            "confidence": row["confidence"], "severity": row["severity"], "summary": row["summary"],
            "actions": row["actions"], "route": row["route"], "fallback_reason": row["fallback_reason"],
            "valid_json": valid,
            "actions_allowed": _actions_allowed(row["actions"], answer.dropped_actions if answer else 0),
            "pii_in_output": sorted(set(find_pii(row["summary"] or "") + find_pii(row["actions"] or ""))),
            "latency_s": answer.latency_s if answer and answer.calls else None,
            "prompt_tokens": answer.prompt_tokens if answer else 0,
            "completion_tokens": answer.completion_tokens if answer else 0,
            "llm_calls": row["llm_calls"], "input_sha256": row["input_sha256"],
            "enriched_model_version": row["model_version"], "prompt_version": row["prompt_version"],
            "kb_index_version": row["kb_index_version"], "gate_version": row["gate_version"],
            "retrieved_doc_ids": row["retrieved_doc_ids"], "registry_fingerprint": model.fingerprint,
            "golden_sha256": golden_sha256, "run_id": run_id, "evaluated_at": evaluated_at,
        })
    return pl.DataFrame(out, schema=EVALUATION_SCHEMA)


def summarize(rows: pl.DataFrame, wall_s: float | None = None) -> dict:
    """The reported metrics of one version's per-case rows (numbers, and `per_label` as a dict)."""
    n = rows.height
    truth, predicted = rows["expected_label"].to_list(), rows["label"].to_list()
    labels = sorted(set(truth))
    latencies = [v for v in rows["latency_s"].to_list() if v is not None]
    summary = {
        "cases": n,
        "accuracy": round(sum(rows["label_correct"].to_list()) / n, 4) if n else 0.0,
        "macro_f1": round(macro_f1(truth, predicted, labels), 4),
        "valid_json_rate": round(rows["valid_json"].mean(), 4) if n else 0.0,
        "allowed_action_rate": round(rows["actions_allowed"].mean(), 4) if n else 0.0,
        "pii_outputs": int(rows.filter(pl.col("pii_in_output").list.len() > 0).height),
        "fallback_rate": round(rows.filter(pl.col("route") == "fallback").height / n, 4) if n else 0.0,
        "latency_p50_s": round(percentile(latencies, 50), 4),
        "latency_p95_s": round(percentile(latencies, 95), 4),
        "tokens_per_case": round(float(rows["prompt_tokens"].sum() + rows["completion_tokens"].sum()) / n, 2)
        if n else 0.0,
        "llm_calls_per_case": round(float(rows["llm_calls"].sum()) / n, 4) if n else 0.0,
        "per_label": {lab: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
                      for lab, m in label_metrics(truth, predicted, labels).items()},
        "routes": dict(Counter(rows["route"].to_list())),
    }
    if wall_s is not None:
        summary["seconds_per_case"] = round(wall_s / n, 4) if n else 0.0
    return summary


def confusion_matrix(rows: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """(labels, counts[expected, predicted]) over the five labels (plus `none` for a missing label)."""
    labels = list(current_pack().labels)
    predicted_labels = labels + (["none"] if rows["label"].is_null().any() else [])
    index = {lab: i for i, lab in enumerate(predicted_labels)}
    counts = np.zeros((len(labels), len(predicted_labels)), dtype=int)
    for expected, label in rows.select("expected_label", "label").iter_rows():
        if expected in index:
            counts[index[expected], index.get(label if label is not None else "none", index[current_pack().fallback_label])] += 1
    return predicted_labels, counts


def confusion_png(rows: pl.DataFrame, title: str) -> bytes:
    """A confusion-matrix heat map (PNG), expected labels down, predicted across."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a GUI backend inside a run
    from matplotlib import pyplot as plt

    labels, counts = confusion_matrix(rows)
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=80)
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), [lab.replace("_", "\n") for lab in labels], fontsize=7)
    ax.set_yticks(range(counts.shape[0]), [lab.replace("_", "\n") for lab in labels[:counts.shape[0]]], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    peak = counts.max() if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        if value:
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > peak / 2 else "black")
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
