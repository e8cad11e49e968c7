"""wattbus's shared library: config, envelope, topics, the MQTT client and the process runtime.

Producers and consumers depend on this package and on ``schemas`` only, never on each other.
"""
