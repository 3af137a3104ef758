"""Evaluation: people in the loop.

Pure logic, no Dagster import: `sampling` (which cases analysts rate), `ratings` (the ratings
contract, reading messages and dropped files), `quality` (precision, recall and action
acceptance). `rating_app` is the analysts' rating page (Starlette + Jinja2, `templates`);
`assets` binds the logic to Delta and Kafka.
"""
