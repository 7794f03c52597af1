"""Generators of the bundled default data set, one module per family of examples.

``factual`` (QA over ``knowledge``, JSON answers, two-turn follow-ups), ``reasoning`` (arithmetic
and unit conversions), ``tools`` (JSON tool calls), ``moments`` (Atcha, Jamkkan, guardrail),
``ssgt`` (held-out rate-metric prompts), ``corpus`` (real Korean/English prose), ``stats`` (GT
shares). GT spans are written by construction through ``spans.Response``.
"""
