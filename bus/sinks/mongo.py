"""MongoDB sink (pymongo): one document per reading, in a time-series collection where the server has them.

Document: ``{ts: Date (UTC, ms), meta: {source, device}, seq, period_s, quality, metrics: {key: value}}``:
the envelope's shape, so a metric added to ``schemas/metrics.toml`` needs no migration at all.

Two layouts, chosen when the collection is first made and recorded in ``wattbus_meta``:

- **time-series** (MongoDB >= 5.0): ``timeField: ts``, ``metaField: meta``, granularity minutes. Such a
  collection cannot have a unique index and accepts duplicates, so idempotence is ours: for each device in a
  batch the sink first asks which ``ts`` in the batch's range are already stored (a query on meta + time,
  which the collection's buckets answer cheaply) and inserts only the others. A crash half-way means
  redelivery, the question is asked again, and only what is still missing goes in. Two writers racing on
  the *same* reading could both insert it: wattbus never does that (each message goes to one store copy),
  and ``read`` drops a duplicate timestamp if one ever appears.
- **plain** (older servers, mongomock in tests, or ``?timeseries=off``): a unique index on
  ``(meta.source, meta.device, ts)`` and unordered bulk inserts; a reading already stored bounces off the
  index and the rest of the batch goes in.

In both layouts the first stored copy of a reading is kept (time-series documents cannot be replaced before
MongoDB 7.0, and one rule for both layouts is simpler to reason about). A redelivered reading is identical to
the stored one, so nothing is lost; the SQL sinks, by contrast, let the last copy win.

Writes use ``j: true``: acknowledged only once in the server's journal, which is when the store acks.

URL: ``mongodb://user@host:27017/wattbus?password_file=/etc/wattbus/mongo.pass`` (or
$WATTBUS_MONGO_PASSWORD; never a password in the URL). wattbus options: ``password_file``, ``collection``
(default ``readings``), ``timeseries`` (``auto`` | ``on`` | ``off``), ``bench=naive`` (one insert per reading:
``wattbus bench``'s comparison path); any other option is pymongo's (authSource, tls, replicaSet, ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgspec
import pymongo
from pymongo import ASCENDING, ReplaceOne
from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, CollectionInvalid, DocumentTooLarge, OperationFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from bus.envelope import Reading
from bus.rollup import Bucket, from_row
from bus.sinks.base import DataError, Sink, SinkError
from bus.sinks.urlopts import reject_inline_secret, secret

SCHEMA_VERSION = 1
PASSWORD_ENV = "WATTBUS_MONGO_PASSWORD"
OWN_OPTIONS = {"password_file", "collection", "timeseries", "bench"}
DUPLICATE_KEY = 11000
EPOCH = datetime(1970, 1, 1)
DEFAULT_TIMEOUTS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000, "socketTimeoutMS": 60000}
"""Fail a write within seconds when the server is away (the store then retries with backoff); the URL may
override each."""
MS = timedelta(milliseconds=1)
MAX_MS = 253402300799999
"""9999-12-31T23:59:59.999Z: Python's datetime ends there; later range ends are clamped to it."""


def to_date(ts_ms: int) -> datetime:
    """Epoch ms -> naive UTC datetime, exact to the millisecond (what BSON Date stores)."""
    return EPOCH + timedelta(milliseconds=ts_ms)


def to_ms(dt: datetime) -> int:
    if dt.tzinfo is not None:
        dt = dt.replace(tzinfo=None) - (dt.utcoffset() or timedelta(0))
    return (dt - EPOCH) // MS


class MongoSink(Sink):
    def __init__(self, url: str, client: pymongo.MongoClient | None = None):
        """``client`` lets tests hand in a mongomock client; normally one is made from the URL."""
        super().__init__(url)
        reject_inline_secret(url, "password_file")
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in OWN_OPTIONS}
        self.database = unquote(parts.path.lstrip("/")) or "wattbus"
        self.collection_name = own.get("collection", "readings")
        self.timeseries = own.get("timeseries", "auto")
        if self.timeseries not in ("auto", "on", "off"):
            raise ValueError(f"mongodb URL option timeseries={self.timeseries!r}: expected auto, on or off")
        self._uri = urlunsplit((parts.scheme, parts.netloc, parts.path,
                                urlencode([(k, v) for k, v in query if k not in OWN_OPTIONS]), ""))
        self._password = secret(own, "password_file", PASSWORD_ENV)
        self.naive = own.get("bench") == "naive"
        self._client = client
        self.layout: str | None = None

    @property
    def client(self) -> pymongo.MongoClient:
        if self._client is None:
            given = {k.lower() for k, _ in parse_qsl(urlsplit(self._uri).query)}
            kwargs: dict = {k: v for k, v in DEFAULT_TIMEOUTS.items() if k.lower() not in given}
            kwargs["tz_aware"] = False
            if self._password is not None:
                kwargs["password"] = self._password
            self._client = pymongo.MongoClient(self._uri, **kwargs)
        return self._client

    @property
    def db(self):
        return self.client[self.database]

    @property
    def coll(self):
        return self.db.get_collection(self.collection_name, write_concern=WriteConcern(j=True))

    # -- schema ------------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        try:
            self._ensure_schema()
        except PyMongoError as exc:
            raise SinkError(f"mongodb {self.describe()}: schema: {exc}") from exc

    def _ensure_schema(self) -> None:
        meta = self.db["wattbus_meta"]
        doc = meta.find_one({"_id": "schema"}) or {}
        if doc.get("version", 0) > SCHEMA_VERSION:
            raise SinkError(f"mongodb {self.describe()}: schema version {doc['version']} is newer than this "
                            f"wattbus ({SCHEMA_VERSION})")
        if self.collection_name not in self.db.list_collection_names():
            self.layout = self._create()
        elif doc.get("layout") in ("timeseries", "plain"):
            self.layout = doc["layout"]
        else:  # made by hand or by an older wattbus: look at what it is
            self.layout = self._kind_of_existing()
        if self.layout == "plain":
            key = [("meta.source", ASCENDING), ("meta.device", ASCENDING), ("ts", ASCENDING)]
            self.coll.create_index(key, unique=True, name="source_device_ts")
        meta.replace_one({"_id": "schema"},
                         {"_id": "schema", "version": SCHEMA_VERSION, "layout": self.layout}, upsert=True)

    def _create(self) -> str:
        if self.timeseries != "off":
            try:
                self.db.create_collection(self.collection_name, timeseries={
                    "timeField": "ts", "metaField": "meta", "granularity": "minutes"})
                return "timeseries"
            except CollectionInvalid:  # made meanwhile by another store copy: look at what it is
                return self._kind_of_existing()
            except (OperationFailure, NotImplementedError) as exc:  # server < 5.0, or mongomock
                if self.timeseries == "on":
                    raise SinkError(f"mongodb {self.describe()}: cannot make a time-series collection: {exc}")
        self.db.create_collection(self.collection_name)
        return "plain"

    def _kind_of_existing(self) -> str:
        info = next(iter(self.db.list_collections(filter={"name": self.collection_name})), {})
        return "timeseries" if info.get("type") == "timeseries" else "plain"

    # -- write -------------------------------------------------------------------------------------
    @staticmethod
    def document(r: Reading) -> dict:
        return {"ts": to_date(r.ts), "meta": {"source": r.source, "device": r.device}, "seq": r.seq,
                "period_s": r.period_s, "quality": r.quality, "metrics": r.metrics}

    def write(self, readings: Sequence[Reading]) -> None:
        """Per-document write errors (validation, a value BSON cannot hold, a document too large) are the
        data's; anything else (no server, write concern, timeouts) is the server's."""
        if not readings:
            return
        if self.layout is None:
            self.ensure_schema()
        try:
            write = self._write_timeseries if self.layout == "timeseries" else self._write_plain
            if self.naive:  # `wattbus bench`'s comparison path: one insert per reading
                for r in readings:
                    write([r])
            else:
                write(readings)
        except BulkWriteError as exc:
            kind = SinkError if exc.details.get("writeConcernErrors") else DataError
            errors = exc.details.get("writeErrors") or [{}]
            raise kind(f"mongodb {self.describe()}: {errors[0].get('errmsg', exc)}") from exc
        except (InvalidDocument, DocumentTooLarge, OverflowError) as exc:
            raise DataError(f"mongodb {self.describe()}: {exc}") from exc
        except PyMongoError as exc:
            raise SinkError(f"mongodb {self.describe()}: {exc}") from exc

    def _write_plain(self, readings: Sequence[Reading]) -> None:
        """Unordered bulk insert; readings already stored bounce off the unique index and stay as they are."""
        first = {}
        for r in readings:
            first.setdefault((r.source, r.device, r.ts), r)
        try:
            self.coll.insert_many([self.document(r) for r in first.values()], ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            if exc.details.get("writeConcernErrors"):
                raise

    def _write_timeseries(self, readings: Sequence[Reading]) -> None:
        by_device: dict[tuple[str, str], dict[int, Reading]] = {}
        for r in readings:
            by_device.setdefault((r.source, r.device), {}).setdefault(r.ts, r)
        new: list[dict] = []
        for (source, device), rows in by_device.items():
            lo, hi = min(rows), max(rows)
            stored = self.coll.find(
                {"meta.source": source, "meta.device": device,
                 "ts": {"$gte": to_date(lo), "$lte": to_date(hi)}},
                {"ts": 1, "_id": 0})
            have = {to_ms(d["ts"]) for d in stored}
            new += [self.document(r) for ts, r in rows.items() if ts not in have]
        if new:
            self.coll.insert_many(new, ordered=False)

    # -- read --------------------------------------------------------------------------------------
    def read(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        try:
            cursor = self.coll.find(
                {"meta.source": source, "meta.device": device,
                 "ts": {"$gte": to_date(start_ms), "$lt": to_date(min(end_ms, MAX_MS))}},
                {"_id": 0}).sort("ts", ASCENDING).batch_size(5000)
            last = None
            for d in cursor:
                ts = to_ms(d["ts"])
                if ts == last:
                    continue
                last = ts
                yield Reading(source, device, ts, d.get("metrics") or {}, d.get("seq"),
                              d.get("period_s") or 0.0, d.get("quality") or "ok")
        except PyMongoError as exc:
            raise SinkError(f"mongodb {self.describe()}: {exc}") from exc

    def count(self, source: str, device: str, start_ms: int = 0, end_ms: int = 2**53) -> int:
        end_ms = min(end_ms, MAX_MS)
        try:
            return self.coll.count_documents({"meta.source": source, "meta.device": device,
                                              "ts": {"$gte": to_date(start_ms), "$lt": to_date(end_ms)}})
        except PyMongoError as exc:
            raise SinkError(f"mongodb {self.describe()}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- rollups: the aggregate consumer's buckets (bus.rollup) --------------------------------------
    # One document per bucket in the ``rollups`` collection, the record's own shape (absent = None),
    # unique on (source, device, period, start); an upsert replaces the whole document.
    _rollups_ready = False

    def _rollups(self):
        coll = self.db.get_collection("rollups", write_concern=WriteConcern(j=True))
        if not self._rollups_ready:
            coll.create_index([("source", ASCENDING), ("device", ASCENDING), ("period", ASCENDING),
                               ("start", ASCENDING)], unique=True, name="bucket_key")
            self._rollups_ready = True
        return coll

    def write_buckets(self, buckets: Sequence[Bucket]) -> None:
        if not buckets:
            return
        pairs = [({"source": b.source, "device": b.device, "period": b.period, "start": b.start},
                  msgspec.to_builtins(b)) for b in buckets]
        try:
            coll = self._rollups()
            try:
                coll.bulk_write([ReplaceOne(key, doc, upsert=True) for key, doc in pairs], ordered=False)
            except TypeError:  # a client without pymongo's current bulk API (mongomock): one at a time
                for key, doc in pairs:
                    coll.replace_one(key, doc, upsert=True)
        except PyMongoError as exc:
            self._rollups_ready = False
            raise SinkError(f"mongodb {self.describe()}: rollups: {exc}") from exc

    def read_buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        try:
            docs = self.db["rollups"].find(
                {"source": source, "device": device, "period": period,
                 "start": {"$gte": start_ms, "$lt": min(end_ms, 2**63 - 1)}},
                {"_id": 0}).sort("start", ASCENDING)
            return [from_row(d) for d in docs]
        except PyMongoError as exc:
            raise SinkError(f"mongodb {self.describe()}: rollups: {exc}") from exc
