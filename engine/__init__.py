"""lakeport's columnar core: storage and credentials, the store, readers, diff and writers.

>>> from engine import Store
>>> events = Store("lakeport-data").stream("events")  # a polars.LazyFrame
"""

from engine.auth import Authorization, AwsKeys, DefaultChain, DelegatedRole
from engine.errors import LakeportError, TerminalError, TransientError
from engine.secrets import Secret
from engine.store import AppendResult, Source, Store, StreamInfo

__all__ = [
    "AppendResult",
    "Authorization",
    "AwsKeys",
    "DefaultChain",
    "DelegatedRole",
    "LakeportError",
    "Secret",
    "Source",
    "Store",
    "StreamInfo",
    "TerminalError",
    "TransientError",
]
