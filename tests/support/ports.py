"""Free loopback ports and waiting for servers: tests never use the standard ports of this machine."""

from wattbus.broker import free_port, wait_port

__all__ = ["free_port", "wait_port"]
