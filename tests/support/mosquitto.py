"""A real Mosquitto started from the project's own config files on a free loopback port.

The launcher is the project's own (``wattbus.broker``), the one the demo and the bench use.
"""

from wattbus.broker import Broker, render_conf

__all__ = ["Broker", "render_conf"]
