"""The next gate version: its training set and the held-out guard it must pass to replace the current one.

Training set = the labelled KB resolved cases + analyst ratings not already among the distilled
examples + the distilled examples (`models/gate_training_examples`). A candidate replaces the
serving gate only when its gated accuracy on the held-out golden split (phrasings neither the
KB nor the first gate trained on) is not lower than the serving gate's; otherwise the serving
version stays and the verdict says why.

"Not lower" is judged against what the split can tell apart: a candidate usually gates more
held-out cases than the serving gate (that is the point of distillation), and on a couple of
hundred cases one error more moves gated accuracy by a percent or two. So the candidate loses
when even the optimistic end of its accuracy's confidence interval (Wilson, one-sided 95%) lies
below the serving gate's gated accuracy minus `tolerance`: a poisoned or broken candidate is
stopped at once, a better-covering one is not stopped by one unlucky case.
Pure logic: callers pass the models and embeddings in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import polars as pl

DEFAULT_TOLERANCE = 0.0
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

    def gated_accuracy_upper_bound(self, z: float = Z_ONE_SIDED_95) -> float | None:
        """The Wilson score interval's upper end for gated accuracy (None when nothing is gated)."""
        if not self.gated:
            return None
        n, p = self.gated, self.correct / self.gated
        center = p + z * z / (2 * n)
        margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return min(1.0, (center + margin) / (1 + z * z / n))

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


def judge(candidate: GatedScore, serving: GatedScore | None, *, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """Accept `candidate` unless it loses gated accuracy on the held-out split against `serving`
    (beyond what the split can resolve: see the module docstring).

    A gate that gates nothing has no accuracy to lose (it costs LLM calls, not quality).
    """
    if serving is None:
        return Verdict(True, "no serving gate to compare with", candidate, serving)
    new, old = candidate.gated_accuracy, serving.gated_accuracy
    if new is None or old is None:
        return Verdict(True, "one of the gates decides no held-out case: nothing to lose", candidate, serving)
    upper = candidate.gated_accuracy_upper_bound()
    if upper + tolerance < old:
        return Verdict(False, f"held-out gated accuracy would fall from {old:.4f} to {new:.4f} ({candidate.correct}"
                              f"/{candidate.gated}; at most {upper:.4f} at 95%): keeping the serving gate",
                       candidate, serving)
    return Verdict(True, f"held-out gated accuracy {new:.4f} vs {old:.4f} of the serving gate "
                         f"(gated share {candidate.gated_share:.3f} vs {serving.gated_share:.3f})", candidate, serving)


def training_rows(resolved_cases: Iterable[dict], ratings: pl.DataFrame, distilled: pl.DataFrame,
                  ) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """(KB resolved cases, extra `(text, label)` rows, counts) for `gate.training_examples`.

    Extra rows = ratings whose case is not a distilled example (a distilled example already
    carries the analyst's label) + the distilled examples.
    """
    resolved = list(resolved_cases)
    distilled_ids = set(distilled["event_id"].to_list()) if distilled.height else set()
    rated = []
    if ratings.height and {"text", "label", "event_id"} <= set(ratings.columns):
        rated = [(t, lab) for e, t, lab in ratings.select("event_id", "text", "label").iter_rows()
                 if e not in distilled_ids]
    taught = list(distilled.select("text", "label").iter_rows()) if distilled.height else []
    counts = {"kb_resolved_cases": len(resolved), "analyst_ratings": len(rated), "distilled_examples": len(taught)}
    return resolved, rated + taught, counts
