"""Parity kit for tests and benchmarks, not part of the shipped packages: the public
`segment_anything` model built to our configurations (`parity.models`) and the matching of two
sets of mask records (`parity.agreement`). It imports the test-only `segment_anything`."""
