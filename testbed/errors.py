"""The testbed's one exception."""


class TestbedError(Exception):
    """A testbed step failed; the message says which and why."""
