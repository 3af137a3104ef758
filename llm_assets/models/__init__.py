"""The model lifecycle: the registry of model versions, their golden-set evaluation, the
`no_regression_vs_production` gate, promotion with gradual rollout, and rollback."""
