"""`streamml bench`: the benchmark harness (install the `bench` extra); results in benchmarks/."""
