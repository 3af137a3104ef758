"""The next gate version: its training set and the held-out guard it must pass to replace the current one.

Training set = the labelled KB resolved cases + analyst ratings not already among the distilled
examples + the distilled examples (`models/gate_training_examples`). A candidate replaces the
serving gate only when its gated accuracy on the held-out golden split (phrasings neither the
KB nor the first gate trained on) is not lower than the best gate's so far (each stored gate
scored on the same held-out cases, ranked by `rank`); otherwise the serving version stays and the
verdict says why.

"Not lower" is judged against what the split can tell apart: a candidate usually gates more
held-out cases than the serving gate (that is the point of distillation), and on a couple of
hundred cases one error more moves gated accuracy by a percent or two (a serving gate at 63/63
would otherwise stop every candidate forever). So the candidate loses when its gated accuracy is
significantly lower (one-sided two-proportion z-test at 5%), or below `min_gated_accuracy`
(0.95, the project's goal for gated accuracy): a poisoned or broken candidate is stopped at
once, a better-covering one is not stopped by one unlucky case.
Pure logic: callers pass the models and embeddings in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from llm_assets.evaluation import trust
from llm_assets.gate.health import wilson_interval

DEFAULT_MIN_GATED_ACCURACY = 0.95
Z_ONE_SIDED_95 = 1.645
# Fewer new examples than this do not start a retraining (the sensor's default).
DEFAULT_MIN_NEW_EXAMPLES = 100


@dataclass(frozen=True)
class GatedScore:
    """How a gate does on a labelled split: share of cases it decides, and accuracy on those."""

    cases: int
    gated: int
    correct: int

    @property
    def gated_share(self) -> float:
        return self.gated / self.cases if self.cases else 0.0

    @property
    def gated_accuracy(self) -> float | None:
        return self.correct / self.gated if self.gated else None

    def as_dict(self) -> dict:
        accuracy = self.gated_accuracy
        return {"cases": self.cases, "gated": self.gated, "gated_share": round(self.gated_share, 4),
                "gated_accuracy": None if accuracy is None else round(accuracy, 4)}


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    candidate: GatedScore
    serving: GatedScore | None


def gated_score(gate, embeddings: np.ndarray, labels: Sequence[str]) -> GatedScore:
    """Score `gate` (anything with `decide(embeddings)` -> decisions with `label` and `gated`)."""
    decisions = gate.decide(embeddings) if len(labels) else []
    gated = [(d.label, truth) for d, truth in zip(decisions, labels) if d.gated]
    return GatedScore(cases=len(labels), gated=len(gated), correct=sum(p == t for p, t in gated))


def lower_by(candidate: GatedScore, serving: GatedScore) -> float:
    """z of "the candidate's gated accuracy is lower than the serving gate's" (pooled two-proportion test)."""
    pooled = (candidate.correct + serving.correct) / (candidate.gated + serving.gated)
    se = math.sqrt(pooled * (1 - pooled) * (1 / candidate.gated + 1 / serving.gated))
    difference = serving.gated_accuracy - candidate.gated_accuracy
    return 0.0 if se == 0 else difference / se


def judge(candidate: GatedScore, serving: GatedScore | None, *,
          min_gated_accuracy: float = DEFAULT_MIN_GATED_ACCURACY, z: float = Z_ONE_SIDED_95,
          against: str = "the serving gate") -> Verdict:
    """Accept `candidate` unless it loses gated accuracy on the held-out split against `serving`
    (significantly, or below `min_gated_accuracy`: see the module docstring); `against` names the
    gate compared with in the reason (the guard passes the best gate so far).

    A gate that gates nothing has no accuracy to lose (it costs LLM calls, not quality).
    """
    if serving is None:
        return Verdict(True, "no earlier gate to compare with", candidate, serving)
    new, old = candidate.gated_accuracy, serving.gated_accuracy
    if new is None or old is None:
        return Verdict(True, "one of the gates decides no held-out case: nothing to lose", candidate, serving)
    seen = (f"held-out gated accuracy {new:.4f} ({candidate.correct}/{candidate.gated}) vs {old:.4f} "
            f"({serving.correct}/{serving.gated}) of {against}")
    if new < min_gated_accuracy:
        return Verdict(False, f"{seen}: below {min_gated_accuracy}, keeping the serving gate", candidate, serving)
    score = lower_by(candidate, serving)
    if score > z:
        return Verdict(False, f"{seen}: significantly lower (z {score:.2f} > {z}), keeping the serving gate",
                       candidate, serving)
    return Verdict(True, f"{seen} (z {score:.2f}); gated share {candidate.gated_share:.3f} vs "
                         f"{serving.gated_share:.3f}", candidate, serving)


def rank(score: GatedScore) -> tuple[float, int]:
    """How good a gate is on the held-out split, for "the best gate so far": the Wilson 95% lower
    bound of its gated accuracy (a perfect 3/3 does not outrank 190/200), then how many it gates."""
    return (wilson_interval(score.correct, score.gated)[0] if score.gated else 0.0, score.gated)


def best_of(scored: Iterable[tuple[str, GatedScore]]) -> tuple[str, GatedScore] | None:
    """The (version, score) that ranks highest (None for no gate)."""
    return max(scored, key=lambda item: rank(item[1]), default=None)


def training_rows(resolved_cases: Iterable[dict], ratings: pl.DataFrame, distilled: pl.DataFrame,
                  released: dict | None = None, *, defences: bool = True,
                  ) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """(KB resolved cases, extra `(text, label)` rows, counts) for `gate.training_examples`.

    Extra rows = the analysts' verdicts on cases that are not distilled examples (a distilled example
    already carries the verdict) + the distilled examples. A verdict is weighed (`evaluation.trust`):
    quarantined analysts count for nothing (`released`: their last reviews), and a label that
    contradicts the model's needs two analysts agreeing (the rating row does not say how sure the
    model was, so one voice is never enough to teach against it). `defences=False`: every case's latest
    rating is taught as it is (what the poisoning benchmark compares with).
    """
    resolved = list(resolved_cases)
    distilled_ids = set(distilled["event_id"].to_list()) if distilled.height else set()
    rated = []
    if not defences and ratings.height:
        latest = ratings.filter(pl.col("label").is_not_null()).sort("rated_at").unique("event_id", keep="last")
        rated = [(t, lab) for e, t, lab in latest.select("event_id", "text", "label").iter_rows() if e not in distilled_ids]
    elif ratings.height and {"text", "label", "event_id", "analyst", "model_label", "rated_at"} <= set(ratings.columns):
        usable = trust.trusted(ratings.filter(pl.col("label").is_not_null() & pl.col("text").is_not_null()), released)
        verdicts, _ = trust.decided_labels(usable, {})
        texts = dict(usable.sort("rated_at").unique("event_id", keep="last").select("event_id", "text").iter_rows())
        rated = [(texts[e], v["label"]) for e, v in sorted(verdicts.items()) if e not in distilled_ids]
    taught = list(distilled.select("text", "label").iter_rows()) if distilled.height else []
    counts = {"kb_resolved_cases": len(resolved), "analyst_ratings": len(rated), "distilled_examples": len(taught)}
    return resolved, rated + taught, counts
