"""How a value is cut into blocks, and how one block is sealed and checked. No I/O.

A value is stored as consecutive blocks (kyfs.engine.sql.blocks keeps them). The cut
points are content-defined: FastCDC (Xia et al., "FastCDC: a Fast and Efficient
Content-Defined Chunking Approach for Data Deduplication", USENIX ATC 2016, through the
``fastcdc`` package), as restic and borg cut their chunks, so an insert, a delete or an
append changes the one or two blocks around it and every version of a value, an
archived value or a copy costs only the blocks that differ. A value shorter than
MIN_BLOCK is one block; no block is longer than MAX_BLOCK.

A block is addressed by the SHA-256 of its bytes (hashlib; SHA-256 runs on the CPU's SHA
extensions where it has them), and that address doubles as its checksum: :func:`unseal`
gives back the bytes only when they hash to it. A block is stored compressed with zstd
(level 1, through the ``zstandard`` package) when that saves at least an eighth of it,
else as it is.

Thread-safety: every function may be called from any thread; zstd contexts are kept one
per thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

import zstandard
from fastcdc import fastcdc

from kyfs.core.errors import DamagedBlock

MIN_BLOCK = 2 * 1024  # bytes: FastCDC's minimum block size
AVG_BLOCK = 8 * 1024  # bytes: the size FastCDC aims at (chosen by measurement: docs/design.md)
MAX_BLOCK = 32 * 1024  # bytes: no block is longer
DIGEST_SIZE = 32  # bytes of a block's address (SHA-256)
RAW, ZSTD = 0, 1  # codecs: how a block's bytes are stored
ZSTD_LEVEL = 1
SMALLEST_COMPRESSED = 64  # bytes: shorter blocks are stored as they are

_local = threading.local()


def cut(data: bytes | bytearray | memoryview) -> Iterator[int]:
    """The lengths of the blocks ``data`` is cut into, in order (they add up to its
    length; none for empty data). The cuts depend only on the bytes since the last cut,
    so cutting again from any earlier cut gives the same cuts."""
    if len(data) <= MIN_BLOCK:
        if data:
            yield len(data)
        return
    for chunk in fastcdc(data, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK):
        yield chunk.length


def digest(data: bytes | memoryview) -> bytes:
    """The address of a block holding ``data``: its SHA-256, 32 bytes."""
    return hashlib.sha256(data).digest()


def seal(data: bytes) -> tuple[int, bytes]:
    """(codec, stored bytes) for a block holding ``data``: ZSTD when compressing saves at
    least an eighth, else RAW and ``data`` itself."""
    if len(data) < SMALLEST_COMPRESSED:
        return RAW, data
    packed = pack(data)
    if len(packed) <= len(data) - len(data) // 8:
        return ZSTD, packed
    return RAW, data


def pack(data: bytes) -> bytes:
    """``data`` as one zstd frame (level ZSTD_LEVEL), whatever it saves: the search
    index's copy of indexed text (kyfs.engine.sqlite.index)."""
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_content_size=True, write_checksum=False
        )
    return bytes(compressor.compress(data))


def unpack(packed: bytes, limit: int) -> bytes:
    """The bytes of a :func:`pack` frame, at most ``limit`` of them.

    Raises:
        DamagedBlock: (EIO) not a frame that unpacks within ``limit``.
    """
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    try:
        return bytes(decompressor.decompress(packed, max_output_size=limit))
    except zstandard.ZstdError as exc:
        raise DamagedBlock(f"packed text does not unpack: {exc}") from None


def unseal(block_id: int, codec: int, stored: bytes, size: int, address: bytes) -> bytes:
    """The ``size`` bytes of block ``block_id`` from what is stored, checked against its
    ``address`` (SHA-256).

    Raises:
        DamagedBlock: (EIO, exit 4) the stored bytes do not decompress, are not ``size``
            bytes long, or do not hash to ``address``, or a column has the wrong type
            or range (a damaged row): never wrong bytes.
    """
    if not (
        isinstance(stored, bytes | memoryview)
        and isinstance(size, int)
        and 0 < size <= MAX_BLOCK
        and isinstance(address, bytes | memoryview)
    ):
        raise DamagedBlock(f"block {block_id} is damaged (a column of the wrong type or range)")
    if codec == RAW:
        data = bytes(stored)
    elif codec == ZSTD:
        decompressor = getattr(_local, "decompressor", None)
        if decompressor is None:
            decompressor = _local.decompressor = zstandard.ZstdDecompressor()
        try:
            # A frame header that claims another length is damage: a flipped bit there
            # made python-zstandard allocate what it claims (MemoryError), not fail.
            claimed = zstandard.frame_content_size(stored)
            if claimed not in (size, zstandard.CONTENTSIZE_UNKNOWN):
                raise DamagedBlock(
                    f"block {block_id} does not decompress: its frame claims {claimed} bytes"
                )
            data = decompressor.decompress(stored, max_output_size=size)
        except (zstandard.ZstdError, MemoryError) as exc:
            raise DamagedBlock(f"block {block_id} does not decompress: {exc!r}") from None
    else:
        raise DamagedBlock(f"block {block_id} has an unknown codec {codec!r}")
    if len(data) != size or hashlib.sha256(data).digest() != bytes(address):
        raise DamagedBlock(f"block {block_id} fails its checksum")
    return data


class Changes(Protocol):
    """An open file's buffered changes, as :func:`rewrite` reads them: block ``idx`` of
    ``block_size`` bytes covers ``[idx * block_size, (idx + 1) * block_size)``, its bytes
    first and zeros after them (a block may be shorter than ``block_size``)."""

    @property
    def block_size(self) -> int:
        """Bytes per changed block."""
        ...

    def indexes(self) -> list[int]:
        """The changed blocks' indexes, ascending."""
        ...

    def block(self, idx: int) -> bytes:
        """The bytes of changed block ``idx``."""
        ...


class BlockList:
    """:class:`Changes` from ``(idx, data)`` pairs: for callers that hold the blocks."""

    def __init__(self, block_size: int, pairs: Iterable[tuple[int, bytes]] = ()) -> None:
        self.block_size = block_size
        self._blocks = dict(pairs)

    def indexes(self) -> list[int]:
        """The indexes given, ascending."""
        return sorted(self._blocks)

    def block(self, idx: int) -> bytes:
        """Block ``idx``'s bytes. KeyError when it was not given."""
        return self._blocks[idx]
