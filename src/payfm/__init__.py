"""payfm: open ML foundations platform for payments risk."""

__version__ = "0.1.0"
