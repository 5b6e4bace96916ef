"""The store: the interface and errors (`base`), the typed rows (`rows`), erasure,
the backends (`sqlite`, `postgres`, `supabase`) and `factory.open_store`.

Only the interface and the rows are re-exported here: importing the package imports
no backend.
"""

from campaign_core.store.base import SCHEMA_VERSION, Store, StoreError, StoreUnavailable
from campaign_core.store.rows import (
    AuditEntry,
    CampaignRow,
    DeliveryEventRow,
    DeliveryRow,
    DraftRow,
    DraftView,
    ReportRow,
)

__all__ = ["SCHEMA_VERSION", "AuditEntry", "CampaignRow", "DeliveryEventRow", "DeliveryRow",
           "DraftRow", "DraftView", "ReportRow", "Store", "StoreError", "StoreUnavailable"]
