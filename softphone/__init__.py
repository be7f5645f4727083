"""The softphone application: config, CLI, TUI, and calls that glue sip, ice and media."""

__version__ = "0.1.0"

__all__ = ["__version__"]
