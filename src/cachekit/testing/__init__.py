"""Test support shipped with cachekit, so third-party backends reuse it.

Subclass `StoreTests` in your own test suite and give it a ``store`` fixture::

    from cachekit.testing import StoreTests

    class TestMyStore(StoreTests):
        @pytest.fixture
        def store(self):
            return MyStore(...)
"""

from cachekit.testing.store import BAD_KEYS, StoreTests

__all__ = ["BAD_KEYS", "StoreTests"]
