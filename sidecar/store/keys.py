"""Key layouts for the named databases.

Strings are length-prefixed (u16 big-endian) so that ``(object, key)`` prefixes never run into
each other ("ab"+"c" vs "a"+"bc"), and integers are big-endian so that LMDB's byte order is their
numeric order: an inbox is ``prefix + seq + id``, in the order its invocations joined it.

LMDB refuses keys over 511 bytes, and identifiers may be up to ``MAX_IDENTIFIER_BYTES`` (1,024):
what does not fit is stored as ``0xFF + SHA-256`` of its bytes. UTF-8 never produces 0xFF, and a
plain length prefix here never starts with it (plain parts are far shorter than 0xFF00 bytes), so
a hashed part can never equal a plain one, and a hash has a fixed length: the layouts stay
injective and prefix-free. Keys that fit are stored exactly as before, so existing data and each
key's partition (a hash of its object prefix) do not change.

- Object prefix (``object_prefix``): ``part(service) 01 part(key)`` (``00`` for a plain service),
  or, over ``_MAX_PLAIN_PREFIX`` bytes, the hash of that: 33 bytes, leaving room for every tail.
- State and promises: ``prefix + name``, or ``prefix + hash(name)`` where that would not fit. A
  state value under a hashed name is a ``records.NamedState`` that holds the name, so that
  ``Store.read_state`` gives every name back; promises are only looked up by name.
- Idempotency: ``prefix + part(handler) + key``, its tail hashed where it would not fit.
- Inbox: ``prefix + seq + invocation ID``; the ID is read back, the object is in the invocation's record.
- Journal, completions, timers, finished: invocation IDs (made by the sidecar, 30 bytes) and
  integers: always short. Outbox: ``resolve/`` + an awakeable ID, hashed where it would not fit
  (the value holds the whole resolution).
- The list's indexes, both ending with the invocation ID so that a reverse walk of a prefix is
  newest first: ``by_status`` is ``group / ID``, the group an unfinished invocation's
  ``unfinished`` and a finished one's final status; ``by_target`` has ``component(service) 00 ID``
  for every invocation and ``component(service) 01 component(key) ID`` for those on a key, where a
  component is ``part(text)``, or its hash if that is over ``_MAX_PLAIN_COMPONENT`` bytes (each
  hashed on its own: the service's prefix stays the same whatever the key).
- Costs (``cost_key``): ``component(service) component(handler) key-part ID index``, the key part
  ``00`` for a plain service or ``01 component(key)``, each component hashed past
  ``_MAX_COST_COMPONENT`` bytes on its own. Coarsest first, so that a service, a service's handler
  or one key of it is one range, and a key without its handler a few (one per handler, found by
  seeking past each: handlers are few, keys many, hence handler before key). The invocation ID
  and the entry's index come last: an invocation's rows are one range that a purge deletes by
  prefix, and a journal entry written again at its index (past a gap, see ``Store.read_journal``)
  replaces its row instead of adding one. The step name is in the value, not the key: a purge
  knows the record, not its steps, and every row of a range is read anyway to sum it by step.
- Schedules (``schedule_key``): the schedule's name, hashed where it would not fit (the value
  holds the name).
- Webhook outbox (``webhook_key``): ``receiver tag (8 bytes) + seq + invocation ID``: one range per
  receiver, in the order the owning worker filed its messages (seq from its ``InboxClock``), so
  an invocation's messages come in the order they were filed.
"""

from __future__ import annotations

import hashlib
import struct

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

#: LMDB's key limit (``lmdb.Environment.max_key_size()`` of the default build).
MAX_KEY_BYTES = 511
#: Longer object prefixes are hashed: what follows one (an ID and, later, a sequence number, or a
#: hashed name) always fits in the rest.
_MAX_PLAIN_PREFIX = MAX_KEY_BYTES - 64
_HASHED = 0xFF
_HASH_BYTES = 1 + hashlib.sha256().digest_size


def _uint(layout: struct.Struct, raw: bytes, offset: int) -> int:
    """The one unsigned integer ``layout`` reads at ``offset`` (struct's own results are untyped)."""
    value: int = layout.unpack_from(raw, offset)[0]
    return value


def _hashed(raw: bytes) -> bytes:
    return bytes((_HASHED,)) + hashlib.sha256(raw).digest()


def _part(text: str) -> bytes:
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


def bounded(prefix: bytes, tail: bytes) -> bytes:
    """``prefix + tail``, or ``prefix`` + the tail's hash where that would be too long a key."""
    if len(prefix) + len(tail) <= MAX_KEY_BYTES:
        return prefix + tail
    return prefix + _hashed(tail)


def object_prefix(service: str, key: str | None) -> bytes:
    """The prefix shared by everything filed under one object key (``None``: a plain service)."""
    plain = _part(service) + (b"\x01" + _part(key) if key is not None else b"\x00")
    return plain if len(plain) <= _MAX_PLAIN_PREFIX else _hashed(plain)


def state_slot(service: str, key: str, name: str) -> tuple[bytes, bool]:
    """State ``name``'s key, and whether it holds only the name's hash (then the value must
    carry the name: see the module docstring)."""
    prefix = object_prefix(service, key)
    raw_key = bounded(prefix, name.encode())
    return raw_key, raw_key[len(prefix):len(prefix) + 1] == b"\xff"


def state_key(service: str, key: str, name: str) -> bytes:
    return state_slot(service, key, name)[0]


def state_name(prefix: bytes, raw_key: bytes) -> str | None:
    """The name a state key holds; ``None`` where it holds its hash (the value has the name)."""
    tail = raw_key[len(prefix):]
    return None if tail[:1] == b"\xff" else tail.decode()


def journal_prefix(invocation_id: str) -> bytes:
    return invocation_id.encode() + b"/"


def journal_key(invocation_id: str, index: int) -> bytes:
    return journal_prefix(invocation_id) + _U32.pack(index)


def journal_index(raw: bytes) -> int:
    return _uint(_U32, raw, len(raw) - 4)


def inbox_key(service: str, key: str | None, seq: int, invocation_id: str) -> bytes:
    """``seq`` orders the key's inbox; the ID after it keeps two equal seqs apart."""
    return object_prefix(service, key) + _U64.pack(seq) + invocation_id.encode()


#: An invocation ID's length: the first layout's inbox keys end with one.
_ID_LENGTH = 30


def state_name_hashed(raw_key: bytes) -> bool:
    """Whether a ``state`` key holds its name's hash (its value is then a ``NamedState``)."""
    try:
        return raw_key[prefix_length(raw_key):][:1] == b"\xff"
    except (IndexError, struct.error):  # not a state key (tests write arbitrary ones)
        return False


def upgrade_inbox_key(old: bytes, seq: int) -> tuple[bytes, str]:
    """A first-layout inbox key (object prefix + ID) as it is now, with ``seq``; and its ID."""
    prefix, invocation_id = old[:-_ID_LENGTH], old[-_ID_LENGTH:]
    return prefix + _U64.pack(seq) + invocation_id, invocation_id.decode()


def prefix_length(raw: bytes) -> int:
    """Where the object prefix that ``raw`` starts with ends."""
    if raw[0] == _HASHED:
        return _HASH_BYTES
    pos = 2 + _uint(_U16, raw, 0)
    if raw[pos] == 1:
        return pos + 3 + _uint(_U16, raw, pos + 1)
    return pos + 1


def inbox_invocation_id(raw: bytes) -> str:
    """The invocation an inbox key files (the object is in its record)."""
    return raw[prefix_length(raw) + _U64.size:].decode()


def idempotency_key(service: str, key: str | None, handler: str, idem: str) -> bytes:
    return bounded(object_prefix(service, key), _part(handler) + idem.encode())


def timer_key(due_ms: int, invocation_id: str, index: int) -> bytes:
    """Timers by due time: start-up reloads them in firing order with one scan."""
    return _U64.pack(due_ms) + journal_key(invocation_id, index)


def split_timer_key(raw: bytes) -> tuple[int, str, int]:
    invocation_id = raw[8:-5].decode()
    return _uint(_U64, raw, 0), invocation_id, journal_index(raw)


def status_key(group: str, invocation_id: str) -> bytes:
    """The ``by_status`` entry of an invocation in ``group`` (see the module docstring)."""
    return status_prefix(group) + invocation_id.encode()


def status_prefix(group: str) -> bytes:
    return group.encode() + b"/"


#: A longer service or key is hashed in a ``by_target`` key: two of them and an ID always fit.
_MAX_PLAIN_COMPONENT = 200


def _component(text: str) -> bytes:
    part = _part(text)
    return part if len(part) <= _MAX_PLAIN_COMPONENT else _hashed(part)


def target_prefix(service: str, key: str | None = None) -> bytes:
    """The ``by_target`` prefix of ``service``'s invocations (``key`` None), or of those on ``key``."""
    if key is None:
        return _component(service) + b"\x00"
    return _component(service) + b"\x01" + _component(key)


def target_keys(service: str, key: str | None, invocation_id: str) -> list[bytes]:
    """An invocation's ``by_target`` entries: one under its service, and one under its key if it has one."""
    raw_id = invocation_id.encode()
    if key is None:
        return [target_prefix(service) + raw_id]
    return [target_prefix(service) + raw_id, target_prefix(service, key) + raw_id]


def finished_key(completed_ms: int, invocation_id: str) -> bytes:
    """Finished invocations by completion time: the retention sweep is one range scan."""
    return _U64.pack(completed_ms) + invocation_id.encode()


def finished_key_time(raw: bytes) -> int:
    return _uint(_U64, raw, 0)


#: A longer service, handler or key is hashed in a ``costs`` key: three of them, an ID and an
#: index always fit in ``MAX_KEY_BYTES`` (3 x 150 + 1 + 30 + 4 = 485).
_MAX_COST_COMPONENT = 150


def cost_component(text: str) -> bytes:
    """A service's or handler's part of a ``costs`` key (see the module docstring)."""
    part = _part(text)
    return part if len(part) <= _MAX_COST_COMPONENT else _hashed(part)


def cost_key_part(key: str | None) -> bytes:
    """The object key's part of a ``costs`` key: ``00`` for a plain service."""
    return b"\x00" if key is None else b"\x01" + cost_component(key)


def costs_prefix(service: str, handler: str, key: str | None, invocation_id: str) -> bytes:
    """Where every ``costs`` row of one invocation lives."""
    return cost_component(service) + cost_component(handler) + cost_key_part(key) + invocation_id.encode()


def cost_key(service: str, handler: str, key: str | None, invocation_id: str, index: int) -> bytes:
    """The ``costs`` row of journal entry ``index``."""
    return costs_prefix(service, handler, key, invocation_id) + _U32.pack(index)


def _cost_component_length(raw: bytes, pos: int) -> int:
    return _HASH_BYTES if raw[pos] == _HASHED else 2 + _uint(_U16, raw, pos)


def split_cost_key(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """The service, handler and key parts a ``costs`` key starts with, as they are encoded."""
    handler_at = _cost_component_length(raw, 0)
    key_at = handler_at + _cost_component_length(raw, handler_at)
    end = key_at + 1 if raw[key_at] == 0 else key_at + 1 + _cost_component_length(raw, key_at + 1)
    return raw[:handler_at], raw[handler_at:key_at], raw[key_at:end]


#: A webhook receiver's part of its outbox keys: the first bytes of its URL's SHA-256.
WEBHOOK_TAG_BYTES = 8


def webhook_tag(url: str) -> bytes:
    return hashlib.sha256(url.encode()).digest()[:WEBHOOK_TAG_BYTES]


def webhook_key(tag: bytes, seq: int, invocation_id: str) -> bytes:
    return tag + _U64.pack(seq) + invocation_id.encode()


def split_webhook_key(raw: bytes) -> tuple[bytes, int, str]:
    """(receiver tag, seq, invocation ID) of a ``webhook_outbox`` key."""
    return raw[:WEBHOOK_TAG_BYTES], _uint(_U64, raw, WEBHOOK_TAG_BYTES), raw[WEBHOOK_TAG_BYTES + 8:].decode()


def schedule_key(name: str) -> bytes:
    return bounded(b"", name.encode())


def after_prefix(prefix: bytes) -> bytes | None:
    """The first key past every key that starts with ``prefix`` (``None``: there is none)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))
