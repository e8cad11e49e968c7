"""wattbus: the command line and process launcher (``wattbus run|up|demo|check-config|export|bench``)."""

__version__ = "0.1.0"
