"""The policy test harness behind `pdp test` and `pdp lint` (suites, coverage, mutation, lint)."""
