"""Ratings are weighed: Cohen's kappa per analyst, quarantine and release, cases waiting for review,
and the analyst accounts behind the rating page (tokens stored as hashes, revocation)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from llm_assets.evaluation import trust
from llm_assets.evaluation.analysts import REGISTRY_PATH, AnalystRegistry
from llm_assets.resources.artifacts import ArtifactStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _rated(rows: list[tuple[str, str, str, str]], minutes: int = 0) -> pl.DataFrame:
    """(event_id, analyst, model label, the analyst's label) per rating."""
    return pl.DataFrame([{"event_id": e, "analyst": a, "model_label": m, "label": lab, "label_correct": m == lab,
                          "rated_at": T0 + timedelta(minutes=minutes + i)} for i, (e, a, m, lab) in enumerate(rows)])


def test_kappa_is_one_on_agreement_and_zero_or_less_when_no_better_than_chance():
    assert trust.kappa(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    assert trust.kappa(["a", "a"], ["a", "a"]) == 1.0  # one label, always agreed
    assert trust.kappa(["a", "b", "a", "b"], ["b", "a", "b", "a"]) < 0
    assert trust.kappa(["x"] * 5, ["y"] * 5) == 0.0
    assert trust.kappa([], []) is None
    assert trust.agreement(["x"] * 4, ["x", "x", "x", "y"]) == 0.75  # constant rater: the share of agreement


def test_an_analyst_against_their_peers_is_flagged_and_one_who_corrects_a_few_answers_is_not():
    cases = [f"c{i}" for i in range(8)]
    labels = ["fraud_suspected", "routing_error"] * 4
    rows = [(c, "ana", lab, lab) for c, lab in zip(cases, labels)]
    rows += [(c, "bo", lab, lab) for c, lab in zip(cases, labels)]
    rows += [(c, "max", lab, "other") for c, lab in zip(cases, labels)]
    rows += [(f"d{i}", "cy", lab, lab if i > 2 else "other") for i, lab in enumerate(labels * 2)]  # 3 of 12 corrected
    agreement = {a.analyst: a for a in trust.analyst_agreement(_rated(rows))}
    assert not agreement["ana"].flagged and not agreement["bo"].flagged and not agreement["cy"].flagged
    assert agreement["max"].flagged and "other analysts" in agreement["max"].reason
    assert agreement["max"].peer_pairs == 8  # one per shared case: the others' majority
    assert trust.quarantined(_rated(rows)) == {"max"}


def test_without_peers_the_model_is_the_reference_after_enough_ratings_and_a_release_resets_the_count():
    contrarian = [(f"c{i}", "max", "fraud_suspected", "routing_error") for i in range(trust.MIN_RATINGS)]
    assert trust.quarantined(_rated(contrarian[:-1])) == set()  # too few to judge
    ratings = _rated(contrarian)
    assert trust.quarantined(ratings) == {"max"}
    assert trust.trusted(ratings).is_empty()
    released = {"max": T0 + timedelta(hours=1)}
    assert trust.quarantined(ratings, released) == set()
    assert trust.trusted(ratings, released).height == len(contrarian)
    later = pl.concat([ratings, _rated(contrarian, minutes=120)])  # the same pattern after the review
    assert trust.quarantined(later, released) == {"max"}
    assert trust.trusted(later, released).height == len(contrarian)  # what was reviewed stays trusted


def test_one_dispute_of_a_confident_answer_waits_for_a_second_analyst():
    ratings = _rated([("c1", "ana", "fraud_suspected", "routing_error"),
                      ("c2", "ana", "fraud_suspected", "routing_error"),
                      ("c2", "bo", "fraud_suspected", "routing_error"),
                      ("c3", "ana", "fraud_suspected", "routing_error"),
                      ("c4", "ana", "fraud_suspected", "fraud_suspected")])
    verdicts, review = trust.decided_labels(ratings, {"c1": 0.95, "c2": 0.95, "c3": 0.55, "c4": 0.95})
    assert review == {"c1"}
    assert {e: v["label"] for e, v in verdicts.items()} == {"c2": "routing_error", "c3": "routing_error",
                                                            "c4": "fraud_suspected"}
    samples = pl.DataFrame({"event_id": ["c1", "c2", "c3", "c4"], "confidence": [0.95, 0.95, 0.55, 0.95]})
    assert trust.cases_in_review(ratings, samples) == {"c1"}


def test_tokens_are_stored_as_hashes_and_a_revoked_token_no_longer_opens_the_page(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    registry = AnalystRegistry(store)
    token = registry.add("ana")
    assert token not in store.read_bytes(REGISTRY_PATH).decode()
    assert registry.authenticate(token) == "ana" and registry.authenticate("guess") is None
    with pytest.raises(ValueError, match="exists"):
        registry.add("ana")
    with pytest.raises(ValueError, match="analyst name"):
        registry.add("<script>")
    registry.revoke("ana")
    assert AnalystRegistry(store).authenticate(token) is None
    fresh = registry.add("ana", replace=True)
    assert AnalystRegistry(store).authenticate(fresh) == "ana"
