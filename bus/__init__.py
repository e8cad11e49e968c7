"""wattbus's shared library: config, envelope, topics, the MQTT client, the process runtime, the plugin contract.

Producers and consumers depend on this package and on ``schemas`` only, never on each other.
"""
