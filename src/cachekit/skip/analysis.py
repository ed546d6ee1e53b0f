"""What each file contributes to keys (content hash and imports), and the JSON file that
keeps it between processes, valid while the file's stat is unchanged."""

from __future__ import annotations

import sys

import attrs
import cattrs

#: Identifies cachekit's analysis cache files (a foreign JSON file is ignored).
CACHE_FORMAT = "cachekit.skip.fingerprint"
CACHE_VERSION = 1
#: What a file's recorded imports depend on besides its bytes: what parses (and so what
#: counts as a syntax error) differs between Python versions.
PARSER = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
#: A file modified this recently may change again within its timestamp's resolution
#: without its stat changing (the "racy git" problem): its analysis is used for this
#: session but not written to the cache file.
RACY_NANOSECONDS = 2_000_000_000

_converter = cattrs.Converter()


@attrs.frozen
class FileRecord:
    """What one file contributes, valid while its stat says it is unchanged."""

    mtime_ns: int
    size: int
    ino: int
    #: sha256 of the content, hex.
    digest: str
    #: Imported module names: ``"a.b.c"`` absolute, ``".x"``/``"..pkg.z"`` relative to
    #: the file's directory. Empty when the file does not parse; None when the file
    #: was only hashed (a data file).
    imports: tuple[str, ...] | None


@attrs.frozen
class _CacheFile:
    format: str
    version: int
    parser: str
    files: dict[str, FileRecord]
