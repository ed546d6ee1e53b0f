"""Skipping tests that already passed on the same code: keys of test files
(`fingerprint`, built from `imports`, `closure`, `analysis` and `distributions`) and
signed, private pass records (`records`)."""
