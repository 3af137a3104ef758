"""The independent labelled corpus (`tests/support/independent_cases.jsonl`): what the gate's live
precision is reported on, apart from the sample generator. Nothing trains or calibrates on it."""

from collections import Counter
from pathlib import Path

import pytest

from llm_assets.domain import current_pack
from llm_assets.lib.redaction import find_pii
from tests.support.independent_cases import LABELS, load_independent_cases

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "llm_assets"


def test_the_corpus_has_at_least_300_cases_of_every_label_of_the_pack_and_no_personal_data():
    cases = load_independent_cases()
    assert len(cases) >= 300 and set(LABELS) == set(current_pack().labels)
    assert min(Counter(c["label"] for c in cases).values()) >= 60
    assert [c["id"] for c in cases if find_pii(c["text"])] == []


def test_no_production_module_reads_it():
    readers = [p for p in PACKAGE.rglob("*.py") if "independent_cases" in p.read_text()]
    assert readers == []
