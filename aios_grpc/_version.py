"""The SDK version, reported by GetInfo."""

__version__ = "0.1.0"
