"""The topics and raw messages of one bag, also of a bag cut short by a power loss.

Intact bags are read with `rosbags` (rosbag2 directories, single .mcap / .db3 files, bags
written by other libraries). What a recorder leaves when it dies before closing the bag is
read up to the cut, with a warning (logger ``metaseg_ros.bags``) saying how many messages
were recovered:

- an MCAP without its summary and footer (rosbags: "File end magic is invalid."): the
  records are read in file order with the `mcap` package's StreamReader; a chunk cut in the
  middle is decompressed as far as its bytes go and its complete records are kept;
- a sqlite3 file whose last write is incomplete ("database disk image is malformed"): a
  temporary copy whose header no longer claims the missing pages is read with the standard
  library's sqlite3 in insertion order, up to the first page that is gone;
- a rosbag2 directory without metadata.yaml (rosbag2 writes it when the bag is closed): its
  storage files ``<name>_<N>.mcap|db3`` are read one after the other.

Messages come as CDR bytes; `metaseg_typestore().deserialize_cdr` decodes them. No rclpy.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import sqlite3
import struct
import tempfile
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from metaseg_ros.data.bag_format import BAG_FILE_SUFFIXES

LOG = logging.getLogger("metaseg_ros.bags")
_WARNED: set[tuple[str, int]] = set()


class BagError(ValueError):
    """A bag that cannot be read (not a bag, damaged beyond recovery, no such topic)."""


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag: its type, message count and type hash (RIHS01_..., or '')."""

    name: str
    msgtype: str
    count: int
    digest: str = ""


@dataclass(frozen=True)
class RawMessage:
    """One serialized message: topic, type, log time (ns) and CDR bytes."""

    topic: str
    msgtype: str
    log_time: int
    data: bytes | memoryview


def storage_files(directory: Path) -> list[Path]:
    """The storage files of a rosbag2 directory in recording order (split index)."""
    def split_index(path: Path) -> tuple[int, str]:
        match = re.search(r"_(\d+)$", path.stem)
        return (int(match.group(1)) if match else -1, path.name)

    return sorted((p for p in directory.iterdir() if p.suffix in BAG_FILE_SUFFIXES),
                  key=split_index)


class _IntactFile:
    """A bag (directory or file) rosbags opens."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = path
        with Reader(path) as reader:  # raises on a damaged file
            self.topics = {
                name: TopicInfo(name, info.msgtype or "", info.msgcount,
                                next((c.digest for c in info.connections if c.digest), ""))
                for name, info in reader.topics.items()}

    def messages(self, topics: Collection[str], start: int | None, stop: int | None
                 ) -> Iterator[RawMessage]:
        from rosbags.rosbag2 import Reader, ReaderError

        read = 0
        with Reader(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            if not connections:  # rosbags reads every topic when given none
                return
            try:
                for connection, log_time, raw in reader.messages(connections, start, stop):
                    yield RawMessage(connection.topic, connection.msgtype, log_time, raw)
                    read += 1
            except (ReaderError, sqlite3.DatabaseError, struct.error, EOFError) as error:
                raise BagError(f"{self.path}: damaged after {read} messages ({_reason(error)})"
                               ) from error


class _RecoveredMcap:
    """An MCAP without summary or footer, read record by record up to the cut."""

    def __init__(self, path: Path) -> None:
        self.path = path
        counts: Counter[str] = Counter()
        types: dict[str, str] = {}
        for message in self.messages(None, None, None):
            counts[message.topic] += 1
            types[message.topic] = message.msgtype
        self.topics = {name: TopicInfo(name, types[name], counts[name]) for name in counts}

    def messages(self, topics: Collection[str] | None, start: int | None, stop: int | None
                 ) -> Iterator[RawMessage]:
        from mcap.exceptions import McapError
        from mcap.records import Channel, Chunk, Message, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}

        def handle(record: object) -> Iterator[RawMessage]:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
            elif isinstance(record, Message) and record.channel_id in channels:
                topic, msgtype = channels[record.channel_id]
                if _wanted(topic, record.log_time, topics, start, stop):
                    yield RawMessage(topic, msgtype, record.log_time, record.data)

        with self.path.open("rb") as stream:
            good = 0
            try:
                for record in StreamReader(stream, emit_chunks=True).records:
                    inner = breakup_chunk(record) if isinstance(record, Chunk) else [record]
                    for item in inner:
                        yield from handle(item)
                    good = stream.tell()
            except (McapError, EOFError, struct.error, ValueError):
                pass
            stream.seek(good)
            for item in _partial_chunk_records(stream.read()):
                yield from handle(item)


def _wanted(topic: str, log_time: int, topics: Collection[str] | None, start: int | None,
            stop: int | None) -> bool:
    return (topics is None or topic in topics) and (start is None or log_time >= start) \
        and (stop is None or log_time < stop)


def _partial_chunk_records(tail: bytes) -> list[object]:
    """The complete records inside a chunk record cut short (empty for anything else)."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Message, Schema

    header = struct.Struct("<BQQQQI")
    if len(tail) < header.size + 4 or tail[0] != 0x06:
        return []
    offset = header.size
    (name_length,) = struct.unpack_from("<I", tail, offset)
    compression = tail[offset + 4: offset + 4 + name_length].decode(errors="replace")
    offset += 4 + name_length + 8  # the records' length follows the compression name
    data = tail[offset:]
    try:
        if compression == "zstd":
            import zstandard

            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        elif compression == "lz4":
            import lz4.frame

            data = lz4.frame.LZ4FrameDecompressor().decompress(data)
        elif compression:
            return []
    except Exception:  # a stream cut inside its first block decodes to nothing
        return []
    records: list[object] = []
    position = 0
    readers = {0x03: Schema.read, 0x04: Channel.read}
    while position + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, position)
        body = data[position + 9: position + 9 + length]
        if len(body) < length:
            break
        stream = ReadDataStream(io.BytesIO(body))
        if opcode == 0x05:
            records.append(Message.read(stream, length))
        elif opcode in readers:
            records.append(readers[opcode](stream))
        position += 9 + length
    return records


class _RecoveredSqlite:
    """A sqlite3 bag file whose last write is incomplete, read up to the first lost page."""

    def __init__(self, path: Path, work_dir: Path) -> None:
        self.path = path
        self.copy = work_dir / path.name
        shutil.copyfile(path, self.copy)
        with self.copy.open("r+b") as handle:
            header = handle.read(100)
            if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
                raise BagError(f"{path}: not a sqlite3 database, or cut before its first page")
            page_size = struct.unpack(">H", header[16:18])[0]
            page_size = 65536 if page_size == 1 else page_size
            handle.seek(28)
            handle.write(b"\x00\x00\x00\x00")  # size the database by the file, not the header
            handle.truncate(self.copy.stat().st_size // page_size * page_size)
        try:
            with self._connect() as connection:
                rows = connection.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.DatabaseError as error:
            raise BagError(f"{path}: damaged beyond recovery ({error})") from error
        self._topics = {int(i): (str(name), str(msgtype)) for i, name, msgtype in rows}
        counts = Counter(m.topic for m in self.messages(None, None, None))
        self.topics = {name: TopicInfo(name, msgtype, counts[name])
                       for name, msgtype in self._topics.values() if counts[name]}

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.copy}?mode=ro", uri=True)

    def messages(self, topics: Collection[str] | None, start: int | None, stop: int | None
                 ) -> Iterator[RawMessage]:
        connection = self._connect()
        try:
            cursor = connection.execute("SELECT topic_id, timestamp, data FROM messages "
                                        "ORDER BY id")
            while True:
                try:
                    row = cursor.fetchone()
                except sqlite3.DatabaseError:
                    return  # the cut
                if row is None:
                    return
                topic, msgtype = self._topics.get(int(row[0]), ("", ""))
                log_time = int(row[1])
                if _wanted(topic, log_time, topics, start, stop):
                    yield RawMessage(topic, msgtype, log_time, row[2])
        finally:
            connection.close()


class BagReader:
    """One bag's topics and messages (see the module docstring); use as a context manager.

    path: a rosbag2 directory (with or without metadata.yaml) or a single .mcap / .db3.
    recovered: messages read from a bag cut short (None for an intact bag).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no bag at {self.path}")
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self.recovered: int | None = None
        self.problems: list[str] = []
        self._parts: list[_IntactFile | _RecoveredMcap | _RecoveredSqlite] = []
        if self.path.is_dir() and (self.path / "metadata.yaml").is_file():
            try:
                self._parts = [_IntactFile(self.path)]
            except Exception as error:  # a file of it is damaged: read the files one by one
                self.problems.append(f"{_reason(error)}")
        if not self._parts:
            files = storage_files(self.path) if self.path.is_dir() else [self.path]
            if not files:
                raise BagError(f"{self.path}: no .mcap or .db3 storage files")
            if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
                self.problems.append("no metadata.yaml (the recording was not closed)")
            self._parts = [self._open_file(f) for f in files]
        if self.problems:
            self.recovered = sum(t.count for t in self.topics.values())
            key = (str(self.path.resolve()), self.recovered)
            if key not in _WARNED:
                _WARNED.add(key)
                LOG.warning(f"warning: {self.path} was cut short ({'; '.join(self.problems)}): "
                            f"recovered {self.recovered} messages up to the cut")

    def _open_file(self, path: Path) -> _IntactFile | _RecoveredMcap | _RecoveredSqlite:
        if path.suffix not in BAG_FILE_SUFFIXES:
            raise BagError(f"{path}: not a bag (a rosbag2 directory, .mcap or .db3)")
        try:
            return _IntactFile(path)
        except Exception as error:
            reason = _reason(error)
        self.problems.append(f"{path.name}: {reason}")
        if path.suffix == ".mcap":
            return _RecoveredMcap(path)
        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="metaseg_bag_")
        return _RecoveredSqlite(path, Path(self._work.name))

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topics by name (message counts summed over the bag's files)."""
        merged: dict[str, TopicInfo] = {}
        for part in self._parts:
            for name, info in part.topics.items():
                before = merged.get(name)
                merged[name] = info if before is None else TopicInfo(
                    name, before.msgtype, before.count + info.count, before.digest or info.digest)
        return merged

    def describe(self) -> str:
        """'topic (type, N messages), ...' for error messages."""
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count} messages)"
                         for t in sorted(self.topics.values(), key=lambda t: t.name)) or "none"

    def messages(self, topics: Collection[str], start: int | None = None,
                 stop: int | None = None) -> Iterator[RawMessage]:
        """Messages of these topics with start <= log time < stop (ns), in recording order."""
        for part in self._parts:
            yield from part.messages(set(topics), start, stop)

    def close(self) -> None:
        """Remove temporary copies."""
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
