"""fsspec-backed stores (``s3://``, ``gs://``, ``az://`` and any other fsspec URL): one
module per backend, each imported only when its scheme is opened."""

from cachekit.stores.fsspec.store import FsspecStore

__all__ = ["FsspecStore"]
