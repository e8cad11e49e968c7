"""Storage backends shared by every process that reads or writes history (store, aggregate, api, export).

A sink is chosen by URL (``sqlite:///...``, ``mysql://...``, ``mongodb://...``, ``influx://...``) and keeps two
kinds of record: raw readings (``readings``) and calendar buckets (``rollups``, see ``bus.rollup``). Living in
``bus/`` lets consumers share them without importing each other.
"""

from bus.sinks.base import SINKS, DataError, Sink, SinkError, open_sink

__all__ = ["SINKS", "DataError", "Sink", "SinkError", "open_sink"]
