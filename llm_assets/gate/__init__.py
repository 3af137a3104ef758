"""The embedding gate: a classifier on sentence embeddings that lets `enriched/cases` skip the LLM.

`model` (training, calibration, thresholds, save and load; no Dagster import), `evaluation` (its
report on the golden splits), `assets` (`models/embedding_gate`, and the gate version that the
other domains load from its latest materialization), and distillation: `examples` (LLM answers
become training examples), `retraining` (the training rows and the held-out judgement) and
`distillation` (the `models/gate_training_examples` asset, the `gate_retraining_sensor` and the
held-out guard).
"""
