"""The built-in ``@buntime/plugin-keyval``: Deno-KV-style storage, a queue and search on Turso."""

from ._atomic import AtomicOperation, Check, CommitResult, Mutation, Uuidv7
from ._config import KeyValSettings, resolve_settings
from ._errors import (
    InvalidKeyError,
    InvalidRequestError,
    InvalidValueError,
    KeyValCommitUnknownError,
    KeyValConfigError,
    KeyValConflictError,
    KeyValError,
    KeyValNotFoundError,
    KeyValStorageError,
    KeyValUnavailableError,
)
from ._keys import Key, KeyPart, decode_key, encode_key
from ._kv import Kv, KvEntry, Page, RawEntry
from ._metrics import KvMetrics
from ._plugin import KEYVAL_PLUGIN_NAME, KeyValPlugin, create
from ._queue import DeadLetter, KvQueue, QueueMessage, QueueStats
from ._routes import KV_KEY, create_app
from ._search import IndexInfo
from ._transaction import KvTransaction, TransactionResult
from ._triggers import TriggerEvent

__all__ = [
    "KEYVAL_PLUGIN_NAME",
    "KV_KEY",
    "AtomicOperation",
    "Check",
    "CommitResult",
    "DeadLetter",
    "IndexInfo",
    "InvalidKeyError",
    "InvalidRequestError",
    "InvalidValueError",
    "Key",
    "KeyPart",
    "KeyValCommitUnknownError",
    "KeyValConfigError",
    "KeyValConflictError",
    "KeyValError",
    "KeyValNotFoundError",
    "KeyValPlugin",
    "KeyValSettings",
    "KeyValStorageError",
    "KeyValUnavailableError",
    "Kv",
    "KvEntry",
    "KvMetrics",
    "KvQueue",
    "KvTransaction",
    "Mutation",
    "Page",
    "QueueMessage",
    "QueueStats",
    "RawEntry",
    "TransactionResult",
    "TriggerEvent",
    "Uuidv7",
    "create",
    "create_app",
    "decode_key",
    "encode_key",
    "resolve_settings",
]
