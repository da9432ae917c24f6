"""The package version, in a module of its own so that spft's modules can read it without importing the package
root (whose lazy ``spft.load`` reaches the task registry)."""

__version__ = "0.1.0"
