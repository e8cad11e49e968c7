"""Producers: one sub-package per source; each reads a device and publishes readings to the bus."""
