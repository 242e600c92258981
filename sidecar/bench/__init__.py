"""Benchmarks behind ``bnn-sidecar bench`` (parse, model, e2e, rss). Nothing here asserts a speed."""
