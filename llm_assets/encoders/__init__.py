"""Model maths run without a framework: sentence encoders as plain numpy forward passes over a
model's own weights and tokenizer. Pure computation on arrays: no Dagster, no I/O beyond reading
the model folder it is given, nothing from `llm_assets` (the bottom layer, below `resources/`,
whose `EmbedderResource` chooses and loads them).
"""
