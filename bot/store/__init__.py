"""The database: tables (models), exact state bytes (codec), the async `Store`, Alembic migrations (inside this
package) and the `rwkv-bot db` command line."""
from bot.store.codec import (PackedState, State, expand_runs, pack_state, run_length, split_by_lengths,
                             tokens_from_bytes, tokens_to_bytes, unpack_state)
from bot.store.errors import StoreError
from bot.store.migrate import downgrade_database, upgrade_database
from bot.store.models import AuditEntry, Base, Channel, Character, InitialState, Save, StateRow, Turn
from bot.store.store import Store, StoredState

__all__ = ["AuditEntry", "Base", "Channel", "Character", "InitialState", "PackedState", "Save", "State", "StateRow",
           "Store", "StoreError", "StoredState", "Turn", "downgrade_database", "expand_runs", "pack_state", "run_length",
           "split_by_lengths", "tokens_from_bytes", "tokens_to_bytes", "unpack_state", "upgrade_database"]
