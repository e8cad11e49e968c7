"""Simulated electricity meters: realistic household load, solar and EV profiles on the bus.

Each configured meter (by serial) publishes instantaneous power and never-decreasing import/export
counters every ``interval``, live or as one batch per day, pings a heartbeat, and takes profile changes
over MQTT. See README.md.
"""

from producers.sim.config import Config
from producers.sim.loop import run

__all__ = ["Config", "run"]
