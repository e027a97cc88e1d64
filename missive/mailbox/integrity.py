"""Is an LMDB file whole?  Checked before it is mapped, so a damaged file is refused, not crashed on.

LMDB maps its data file and trusts the header it finds there: a file cut short
(a full disk, a bad copy) kills the process with SIGBUS the first time a page
past the end is touched, with no message; a 0-byte file is silently made into
a new, empty store.  :func:`lmdb_problem` reads the two meta pages LMDB starts
every data file with (``struct MDB_meta`` in ``mdb.c``, LMDB 0.9 on a 64-bit
platform) and compares what they claim with the file:

* the magic number ``0xBEEFC0DE`` and data version 1 (else: not an LMDB file);
* the page size (a power of two, 512 B to 64 KiB) and each meta page's number
  and ``P_META`` flag;
* the last page in use and each database's root page against the file's size
  (else: truncated) and against the map size the header claims.

It reads the file only (no lock, no write), so a refused directory is left
byte-for-byte as it was.  Nothing here imports LMDB.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from missive.errors import Damaged as DamagedKind

MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_META = 0x08
P_INVALID = (1 << 64) - 1
#: page header (pgno, pad, flags, lower, upper) then MDB_meta
_PAGE_HEADER = struct.Struct("<QHHHH")
_META = struct.Struct("<IIQQ")  # magic, version, address, mapsize
_DB = struct.Struct("<IHHQQQQQ")  # pad (the page size in the free db), flags, depth, branch, leaf, overflow, entries, root
_TAIL = struct.Struct("<QQ")  # last page, txn id
_META_END = _PAGE_HEADER.size + _META.size + 2 * _DB.size + _TAIL.size  # 152 bytes


class Damaged(DamagedKind):
    """Stored data that is not whole (a damaged, truncated or foreign file, a ledger gone missing).

    The message is one line naming the file and what is wrong with it.  The CLI
    exits with :data:`missive.cli.common.EXIT_DAMAGED` on it (:mod:`missive.errors`).
    """


def lmdb_problem(data_file: Path) -> str | None:
    """What is wrong with the LMDB data file ``data_file`` (one phrase), or None if it looks whole."""
    try:
        size = os.stat(data_file).st_size
        with open(data_file, "rb") as f:
            head = f.read(2 * 65536 + _META_END)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "is empty (0 bytes)"
    if len(head) < _META_END:
        return f"is {size} bytes, too short to be an LMDB file (truncated?)"
    (magic, version, _, _) = _META.unpack_from(head, _PAGE_HEADER.size)
    if magic != MAGIC:
        return f"is not an LMDB file (magic number 0x{magic:08X} at byte {_PAGE_HEADER.size}, expected 0x{MAGIC:08X})"
    if version != DATA_VERSION:
        return f"has LMDB data version {version}; this LMDB reads version {DATA_VERSION}"
    page_size = _DB.unpack_from(head, _PAGE_HEADER.size + _META.size)[0]
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return f"has a damaged header: page size {page_size} is not a power of two from 512 to 65536"
    if size < 2 * page_size:
        return f"is truncated: {size} bytes, less than its two {page_size}-byte header pages"
    newest = (-1, 0)
    for page in (0, 1):
        base = page * page_size
        pgno, _, flags, _, _ = _PAGE_HEADER.unpack_from(head, base)
        magic, version, _, map_size = _META.unpack_from(head, base + _PAGE_HEADER.size)
        where = f"header page {page} (byte {base})"
        if pgno != page or not flags & P_META:
            return f"has a damaged {where}: page number {pgno}, flags 0x{flags:04x}"
        if magic != MAGIC or version != DATA_VERSION:
            return f"has a damaged {where}: magic 0x{magic:08X}, version {version}"
        dbs = [_DB.unpack_from(head, base + _PAGE_HEADER.size + _META.size + i * _DB.size) for i in (0, 1)]
        last_page, txn_id = _TAIL.unpack_from(head, base + _PAGE_HEADER.size + _META.size + 2 * _DB.size)
        if dbs[0][0] != page_size:
            return f"has a damaged {where}: page size {dbs[0][0]}, header page 0 says {page_size}"
        if last_page < 1 or (last_page + 1) * page_size > map_size:
            return f"has a damaged {where}: last page {last_page} does not fit its map size {map_size}"
        for name, db in zip(("free-page", "main"), dbs, strict=True):
            root = db[7]
            if root != P_INVALID and not 1 < root <= last_page:
                return f"has a damaged {where}: the {name} database's root page {root} is outside pages 2..{last_page}"
        if txn_id > newest[0]:
            newest = (txn_id, last_page)
    needed = (newest[1] + 1) * page_size
    if size < needed:
        return (f"is truncated: its header says {newest[1] + 1} pages of {page_size} bytes ({needed} bytes), "
                f"the file has {size}")
    return None


def check_lmdb(directory: Path, what: str) -> None:
    """Raise :class:`Damaged` naming ``directory/data.mdb`` if it is not a whole LMDB file (see module doc)."""
    data_file = directory / "data.mdb"
    problem = lmdb_problem(data_file)
    if problem is not None:
        raise Damaged(f"{data_file} ({what}) {problem}: refusing to open it; nothing was changed "
                      "(restore it from a backup: `missive restore`)")


__all__ = ["DATA_VERSION", "MAGIC", "Damaged", "check_lmdb", "lmdb_problem"]
