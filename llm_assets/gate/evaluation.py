"""The labelled sets the embedding gate is calibrated and judged on, and its report per materialization.

- calibration: the domain pack's calibration file (`sources.calibration`; the payments pack's is
  the `validation` phrasing split): the gate's temperature and per-label thresholds are fitted
  here, never on its training cases; a pack without one calibrates on the golden `evaluation`
  split;
- `evaluation` split of `evaluation/golden_cases`: the cases every model version is scored on;
- `held_out` split of `evaluation/golden_cases`: cases nothing trains or calibrates on (for the
  payments pack: phrasing families, openers, closers and synonyms neither training nor
  calibration saw), the number that predicts how the gate does on cases written by someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from llm_assets.domain import current_pack
from llm_assets.domain.golden import read_labelled
from llm_assets.gate.model import GateModel
from llm_assets.evaluation.golden_cases import read_golden
from llm_assets.resources.delta import DeltaLakeStorage

SPLITS = ("evaluation", "held_out")


@dataclass(frozen=True)
class LabelledSet:
    name: str
    texts: list[str]
    labels: list[str]
    source: str  # where it was read from


def labelled_set(name: str, delta: DeltaLakeStorage) -> LabelledSet:
    """`calibration`, `evaluation` or `held_out` (see the module docstring)."""
    pack = current_pack()
    if name == "calibration" and pack.spec.sources.calibration:
        frame = read_labelled(pack, pack.spec.sources.calibration, what="calibration cases")
        source = str(pack.resolve(pack.spec.sources.calibration))
    else:
        split = "evaluation" if name == "calibration" else name
        frame = read_golden(delta, split)
        source = f"evaluation/golden_cases[{split}]"
    return LabelledSet(name, frame["payload_raw"].to_list(), frame["label"].to_list(), source)


def golden_report(model: GateModel, sets: Sequence[LabelledSet],
                  embed: Callable[[list[str]], np.ndarray]) -> dict[str, dict]:
    """Per split: n, accuracy, gated share, gated accuracy and ECE of `model` (texts are embedded by `embed`)."""
    return {s.name: model.evaluate(embed(s.texts), s.labels) for s in sets}


def report_rows(model: GateModel, report: dict[str, dict]) -> list[list[object]]:
    """Rows of the markdown table: one per golden split, then the calibration split (out-of-sample)."""
    calibration = model.metadata.get("calibration") or {}
    rows = [[name, m["n"], m["accuracy"], m["gated_share"], m["gated_accuracy"], m["ece"]]
            for name, m in report.items()]
    if calibration:
        rows.append([f"calibration ({calibration.get('source')})", calibration.get("n"), calibration.get("accuracy"),
                     calibration.get("gated_share"), calibration.get("gated_accuracy"), calibration.get("ece")])
    return rows


REPORT_HEADER = ("split", "cases", "accuracy", "gated share", "gated accuracy", "ECE")
