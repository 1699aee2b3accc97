"""lakeport's columnar core: storage and credentials, the store, readers, diff and writers.

    >>> from engine import Store
    >>> events = Store("lakeport-data").stream("events")  # a polars.LazyFrame
    >>> Audiences(Store("lakeport-data")).members("vip")   # a polars.LazyFrame

The names below load on first use, so that `import engine.errors` (as the CLI does at start-up)
does not pull in pyarrow, polars and deltalake.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.audiences import Audiences
    from engine.auth import Authorization, AwsKeys, DefaultChain, DelegatedRole
    from engine.errors import LakeportError, TerminalError, TransientError
    from engine.secrets import Secret
    from engine.store import AppendResult, Source, Store, StreamInfo

_HOMES = {
    "Audiences": "engine.audiences",
    "Authorization": "engine.auth",
    "AwsKeys": "engine.auth",
    "DefaultChain": "engine.auth",
    "DelegatedRole": "engine.auth",
    "LakeportError": "engine.errors",
    "TerminalError": "engine.errors",
    "TransientError": "engine.errors",
    "Secret": "engine.secrets",
    "AppendResult": "engine.store",
    "Source": "engine.store",
    "Store": "engine.store",
    "StreamInfo": "engine.store",
}

__all__ = [
    "AppendResult",
    "Audiences",
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(import_module(home), name)
