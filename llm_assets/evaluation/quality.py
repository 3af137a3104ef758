"""Quality of the enrichment as analysts judged it: precision and recall per label and the
action acceptance rate, per model version; no Dagster import.

Every analyst's rating counts once (two analysts rating one case are two judgements). The
label the model gave is `model_label`; the right one is `label`. Per label L: precision =
cases the model labelled L that are L / cases the model labelled L; recall = cases that are L
and the model labelled L / cases that are L. The row with label `all` holds the share of
correct labels (micro precision = micro recall) and every action.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

ALL_LABELS = "all"
QUALITY_SCHEMA = {
    "event_date": pl.String, "model_version": pl.String, "label": pl.String, "ratings": pl.Int64,
    "predicted": pl.Int64, "actual": pl.Int64, "true_positives": pl.Int64, "precision": pl.Float64,
    "recall": pl.Float64, "actions_proposed": pl.Int64, "actions_accepted": pl.Int64,
    "action_acceptance_rate": pl.Float64, "analysts": pl.Int64, "computed_at": pl.Datetime("us", "UTC"),
}


def _share(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def quality_metrics(ratings: pl.DataFrame, *, day: str, computed_at: datetime) -> pl.DataFrame:
    """`QUALITY_SCHEMA` rows for the ratings of one day's samples (`ratings` already filtered)."""
    rows = []
    if ratings.is_empty():
        return pl.DataFrame(schema=QUALITY_SCHEMA)
    rated = ratings.with_columns(
        pl.col("actions_proposed").list.len().alias("_proposed"),
        pl.col("actions_accepted").list.len().alias("_accepted"),
        (pl.col("model_label") == pl.col("label")).alias("_correct"),
    )
    for (version,), group in rated.group_by("model_version", maintain_order=True):
        labels = sorted(set(group["model_label"].to_list()) | set(group["label"].to_list()))
        for label in labels:
            predicted = group.filter(pl.col("model_label") == label)
            actual = group.filter(pl.col("label") == label)
            true_positives = predicted.filter(pl.col("label") == label).height
            touched = group.filter((pl.col("model_label") == label) | (pl.col("label") == label))
            proposed, accepted = int(predicted["_proposed"].sum()), int(predicted["_accepted"].sum())
            rows.append({"label": label, "ratings": touched.height, "predicted": predicted.height,
                         "actual": actual.height, "true_positives": true_positives,
                         "precision": _share(true_positives, predicted.height),
                         "recall": _share(true_positives, actual.height), "actions_proposed": proposed,
                         "actions_accepted": accepted, "action_acceptance_rate": _share(accepted, proposed),
                         "analysts": touched["analyst"].n_unique(), "model_version": version})
        correct = int(group["_correct"].sum())
        proposed, accepted = int(group["_proposed"].sum()), int(group["_accepted"].sum())
        rows.append({"label": ALL_LABELS, "ratings": group.height, "predicted": group.height,
                     "actual": group.height, "true_positives": correct,
                     "precision": _share(correct, group.height), "recall": _share(correct, group.height),
                     "actions_proposed": proposed, "actions_accepted": accepted,
                     "action_acceptance_rate": _share(accepted, proposed),
                     "analysts": group["analyst"].n_unique(), "model_version": version})
    return pl.DataFrame([{**r, "event_date": day, "computed_at": computed_at} for r in rows],
                        schema=QUALITY_SCHEMA).sort("model_version", "label")
