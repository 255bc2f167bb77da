"""certify's version: a leaf module, so that what records it imports nothing else of certifier."""

__version__ = "0.1.0"
