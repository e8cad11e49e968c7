"""Consumers: one sub-package per consumer; each subscribes to the bus and stores, exposes or acts."""
