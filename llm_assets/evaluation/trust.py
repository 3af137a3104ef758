"""How much a rating is believed: analysts' agreement, quarantine, and cases waiting for a second opinion.

A rating is a judgement, not an order. Each analyst's agreement is measured with Cohen's kappa
(`kappa`): against the other analysts' majority on the cases they share, and against the model's label
on the analyst's own ratings. An analyst is **flagged** when they disagree with the model (kappa under
`KAPPA_FLOOR`) and their peers do not vouch for them: either the peers disagree too (enough shared
cases, `MIN_PEER_PAIRS`), or there are no peers and enough ratings to judge (`MIN_RATINGS`: an analyst
who corrects a few answers is not suspicious; one who contradicts nearly all of them is). An analyst
the peers agree with is never flagged for correcting the model. A flagged analyst's ratings are
**quarantined**: they teach the gate nothing and become no golden case, until a reviewer releases
them (`llm-assets analysts release NAME`); after a release, only newer ratings are judged.

A single rating that disputes a confident model answer (`CONFIDENT`) does not flip the label: the case
goes to review (`cases_in_review`), and a second analyst's rating decides (`decided_labels`).

Pure logic on `evaluation/ratings` rows (polars); no Dagster import.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import polars as pl

KAPPA_FLOOR = 0.4
MIN_PEER_PAIRS = 5
MIN_RATINGS = 10
CONFIDENT = 0.8


def kappa(left: list[str], right: list[str]) -> float | None:
    """Cohen's kappa of two raters on the same items (None without items). Two raters who agree on
    every item have kappa 1 even when they only ever use one label."""
    n = len(left)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(left, right)) / n
    lc, rc = Counter(left), Counter(right)
    expected = sum(lc[k] * rc.get(k, 0) for k in lc) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def agreement(left: list[str], right: list[str]) -> float | None:
    """Kappa when both raters use more than one label; otherwise the share of agreement (kappa says
    nothing when one side is constant, e.g. an analyst who only rated cases of one label)."""
    if len(set(left)) > 1 and len(set(right)) > 1:
        return kappa(left, right)
    return sum(a == b for a, b in zip(left, right)) / len(left) if left else None


def _latest(ratings: pl.DataFrame) -> pl.DataFrame:
    """The latest rating per (case, analyst), with the label the analyst gave (`label`)."""
    if ratings.is_empty():
        return ratings
    return ratings.sort("rated_at").unique(["event_id", "analyst"], keep="last")


@dataclass(frozen=True)
class Agreement:
    analyst: str
    ratings: int
    kappa_model: float | None     # against the model's label on their ratings
    peer_pairs: int               # (case, other analyst) pairs they share
    kappa_peers: float | None
    flagged: bool
    reason: str | None

    def row(self) -> dict:
        return self.__dict__.copy()


def analyst_agreement(ratings: pl.DataFrame, released: Mapping[str, datetime] | None = None) -> list[Agreement]:
    """Each analyst's agreement, judged on their ratings after their last release (`released`)."""
    released = dict(released or {})
    latest = _latest(ratings)
    if latest.is_empty():
        return []
    by_case: dict[str, list[tuple[str, str]]] = {}
    for r in latest.select("event_id", "analyst", "label").iter_rows():
        by_case.setdefault(r[0], []).append((r[1], r[2]))
    out = []
    for analyst, own in latest.group_by("analyst", maintain_order=True):
        name = analyst[0]
        since = released.get(name)
        if since is not None:
            own = own.filter(pl.col("rated_at") > since)
        labels, model = own["label"].to_list(), own["model_label"].to_list()
        mine, theirs = [], []
        for event_id, label in zip(own["event_id"].to_list(), labels):
            others = Counter(lab for who, lab in by_case.get(event_id, []) if who != name)
            ranked = others.most_common(2)
            if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):  # the others' majority; a tie says nothing
                mine.append(label)
                theirs.append(ranked[0][0])
        k_model, k_peers = agreement(labels, model), agreement(mine, theirs)
        judged = len(labels) >= MIN_RATINGS or len(mine) >= MIN_PEER_PAIRS
        peers_disagree = len(mine) >= MIN_PEER_PAIRS and k_peers is not None and k_peers < KAPPA_FLOOR
        no_peers = len(mine) < MIN_PEER_PAIRS
        reason = None
        if judged and k_model is not None and k_model < KAPPA_FLOOR and (peers_disagree or no_peers):
            reason = (f"agreement with other analysts {k_peers:.2f} and with the model {k_model:.2f} < {KAPPA_FLOOR} "
                      f"on {len(mine)} shared ratings" if peers_disagree else
                      f"agreement with the model {k_model:.2f} < {KAPPA_FLOOR} on {len(labels)} ratings, no peers")
        out.append(Agreement(name, len(labels), k_model, len(mine), k_peers, reason is not None, reason))
    return sorted(out, key=lambda a: a.analyst)


def quarantined(ratings: pl.DataFrame, released: Mapping[str, datetime] | None = None) -> set[str]:
    return {a.analyst for a in analyst_agreement(ratings, released) if a.flagged}


def trusted(ratings: pl.DataFrame, released: Mapping[str, datetime] | None = None) -> pl.DataFrame:
    """The ratings that may teach: those of quarantined analysts left out (given after their release;
    what a reviewer released stays trusted)."""
    out = quarantined(ratings, released)
    if not out or ratings.is_empty():
        return ratings
    released = dict(released or {})
    keep = ~pl.col("analyst").is_in(list(out))
    for name in out:
        if name in released:
            keep = keep | ((pl.col("analyst") == name) & (pl.col("rated_at") <= released[name]))
    return ratings.filter(keep)


def decided_labels(ratings: pl.DataFrame, model_confidence: Mapping[str, float],
                   confident: float = CONFIDENT) -> tuple[dict[str, dict], set[str]]:
    """What trusted ratings decide per case, and the cases still in review.

    A case's verdict is its analysts' majority label (latest rating per analyst). A verdict that
    contradicts the model's label on a confident answer needs two analysts agreeing on it; with one,
    the case is in review (no verdict yet). Returns event_id -> {"label", "label_correct", "analysts",
    "analyst", "rated_at"} and the ids in review.
    """
    latest = _latest(ratings)
    verdicts, review = {}, set()
    if latest.is_empty():
        return verdicts, review
    for (event_id,), group in latest.group_by("event_id"):
        votes = Counter(group["label"].to_list())
        label, count = votes.most_common(1)[0]
        if list(votes.values()).count(count) > 1:  # a tie: nobody has decided it
            review.add(event_id)
            continue
        model_label = group["model_label"][0]
        disputes = label != model_label
        if disputes and count < 2 and model_confidence.get(event_id, 1.0) >= confident:
            review.add(event_id)
            continue
        last = group.sort("rated_at").row(-1, named=True)
        verdicts[event_id] = {"label": label, "label_correct": not disputes, "analysts": group.height,
                              "analyst": last["analyst"], "rated_at": last["rated_at"]}
    return verdicts, review


def cases_in_review(ratings: pl.DataFrame, samples: pl.DataFrame, confident: float = CONFIDENT) -> set[str]:
    """Sampled cases one analyst disputed against a confident model answer (the page lists them to others).
    `ratings` needs `event_id`, `analyst`, `label_correct`, `rated_at`; `samples` `event_id`, `confidence`."""
    if ratings.is_empty() or samples.is_empty():
        return set()
    latest = _latest(ratings)
    per_case = latest.group_by("event_id").agg(pl.len().alias("n"), (~pl.col("label_correct")).sum().alias("wrong"))
    disputed = per_case.filter((pl.col("n") == 1) & (pl.col("wrong") == 1))
    confident_ids = samples.filter(pl.col("confidence") >= confident)["event_id"]
    return set(disputed.filter(pl.col("event_id").is_in(confident_ids.to_list()))["event_id"].to_list())
