"""datazone: the gateway of a public-data zone."""

__version__ = "0.1.0"
