"""GT categories (paper Table 2) and levels, importable without MLX (CLI help, configs)."""

CATEGORIES = ("factual", "structural", "reasoning", "self_correction", "guardrail", "verification")
LEVELS = {"gt": 1, "super": 2, "ssgt": 3}
