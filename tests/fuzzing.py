"""What every fuzz test shares: deterministic hypothesis settings and the one-line-error property.

The property, for any input: the call succeeds, or fails with the project's one-line error (a
``ValueError`` / ``FileNotFoundError`` whose message is one non-empty line); never another
exception.
"""

from hypothesis import HealthCheck

FUZZ = dict(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ERRORS = (ValueError, FileNotFoundError)


def outcome(fn, *args, **kw):
    """Run ``fn``: (its result, None), or (None, the error) when it failed with a one-line project
    error; any other exception, or an error of several lines, fails the test."""
    try:
        return fn(*args, **kw), None
    except ERRORS as err:
        msg = str(err)
        assert msg.strip() and "\n" not in msg, f"{type(err).__name__} not one line: {msg!r}"
        return None, err
