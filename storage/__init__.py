"""The run store. Import ``Store`` from here; records are plain dataclasses."""
from storage.records import *  # noqa: F401,F403
from storage.store import Store, StoreError, data_home, default_url  # noqa: F401
