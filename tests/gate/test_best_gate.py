"""The retrained gate's guard compares a candidate with the best gate so far on the held-out split
(`retraining.rank`, `best_of`), found among every gate the artifact store holds."""

import numpy as np
import pytest

from llm_assets.domain import current_pack
from llm_assets.gate.model import gate_folder, save_gate, stored_gate_versions, train_gate
from llm_assets.gate.retraining import GatedScore, best_of, judge, rank
from llm_assets.resources.artifacts import ArtifactStore

pytestmark = pytest.mark.unit


def test_the_best_gate_so_far_ranks_by_the_lower_bound_of_its_gated_accuracy_not_a_lucky_few():
    lucky, broad, serving = GatedScore(200, 3, 3), GatedScore(200, 150, 150), GatedScore(200, 150, 144)
    assert rank(broad) > rank(lucky) and rank(broad) > rank(serving)
    assert best_of([("lucky", lucky), ("broad", broad), ("serving", serving)]) == ("broad", broad)
    assert best_of([]) is None


def test_a_candidate_that_only_matches_the_serving_gate_loses_to_the_best_so_far():
    best, serving, candidate = GatedScore(200, 150, 150), GatedScore(200, 150, 144), GatedScore(200, 150, 143)
    assert judge(candidate, serving).accepted  # the gate it replaces would let it through
    verdict = judge(candidate, best, against="the best gate so far (v1)")
    assert not verdict.accepted and "of the best gate so far (v1)" in verdict.reason


def test_every_whole_gate_in_the_artifact_store_is_found(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    rng = np.random.default_rng(1)
    labels = [current_pack().labels[i % 5] for i in range(60)]
    centres = {label: rng.normal(size=6) * 4 for label in set(labels)}
    versions = []
    for seed in (0, 1):
        gate = train_gate(np.array([centres[label] + rng.normal(size=6) for label in labels]), labels,
                          source_description=f"seed {seed}", seed=seed, cv_folds=3)
        save_gate(gate, store)
        versions.append(gate.version)
    store.write_bytes(f"{gate_folder('interrupted')}/model-0.joblib", b"half a save")  # no training.json

    assert stored_gate_versions(store) == sorted(set(versions))
