"""The run store. Import ``Store`` from here; records are plain dataclasses."""
from storage.records import *  # noqa: F401,F403
from storage.store import (  # noqa: F401
    EditConflict, Store, StoreError, content_hash, data_home, default_author, default_url,
)
