"""The store: the interface and errors (`base`), erasure (`erasure`), the backends
(`sqlite`, `postgres`, `supabase`) and `factory.open_store`.

Only the interface is re-exported here, so importing the package imports no backend.
"""

from campaign_core.store.base import SCHEMA_VERSION, Store, StoreError, StoreUnavailable

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "StoreUnavailable"]
