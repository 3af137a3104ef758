"""The gate domain's definitions: the embedding gate, its distilled training examples and the
gate retraining sensor (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.gate import assets, distillation

defs = dg.Definitions(assets=[assets.embedding_gate, distillation.gate_training_examples],
                      sensors=[distillation.gate_retraining_sensor])
