"""Measure: Gram matrices, distances, kernels and sigma rules; dependence estimators as pure functions over kernel
matrices, their registry, and their packed (triangle) evaluation. Depends on torch only."""
