"""When each watched Dynamics legal entity last sent a business event: one row per (connection, legal entity),
written by one upsert per pushed event and read by the silence alarm's check (``shared.pipeline.silence``)."""

from __future__ import annotations

from datetime import datetime

from shared.storage.tables import SILENCE, Stores, table_key


def row_keys(connection: str, legal_entity: str) -> dict[str, str]:
    """The row of a legal entity, named without regard to case (F&O spells dataAreaId either way)."""
    return {"PartitionKey": table_key(connection), "RowKey": table_key(legal_entity.casefold())}


def heard_from(stores: Stores, connection: str, legal_entity: str, at: datetime) -> None:
    """A business event of ``legal_entity`` came in at ``at``: one merge upsert, no read; it keeps an alarm's
    mark on the row for the next check to clear."""
    from azure.data.tables import UpdateMode

    if legal_entity:
        stores.tables.table(SILENCE).upsert_entity({**row_keys(connection, legal_entity), "LastEvent": at},
                                                   mode=UpdateMode.MERGE)
