"""The stages of ``repro``: one module each, defining ``STAGE = Stage(...)`` (``../stage.py``).

Nothing here lists them: ``stage.stages()`` finds every module of this package, so a new stage
is one new file.
"""
