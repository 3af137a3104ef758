"""The distillation domain's definitions: the training-examples asset and the gate retraining sensor."""

import dagster as dg

from llm_assets.distillation import assets

defs = dg.Definitions(assets=[assets.gate_training_examples], sensors=[assets.gate_retraining_sensor])
