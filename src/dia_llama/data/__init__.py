"""Data: the synthetic chest-CT benchmark, manifest datasets and caching."""
