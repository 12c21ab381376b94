"""dpsql: a differentially private SQL proxy and library."""

__version__ = "0.1.0"
