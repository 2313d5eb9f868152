"""BEP 44 items stored at this node: bounded, expiring, with the mutable-item rules.

An immutable item is stored under ``sha1(v)``; a mutable one under
``sha1(k + salt)`` and is only replaced by a correctly signed item with a
higher sequence number.  The refusals map to BEP 44's error codes, which the
node sends back as KRPC errors:

- 205: ``v`` too big; 207: ``salt`` too big; 206: bad signature;
- 301: ``cas`` given and not equal to the stored ``seq`` (compare-and-swap lost);
- 302: ``seq`` lower than the stored one, or equal with a different value
  (one sequence number names one value; equal *and* the same value just
  refreshes the item's lifetime, as BEP 44 asks).

At most ``max_items`` items are kept; storing one more evicts the least
recently stored or refreshed.  Items not refreshed within ``ttl`` expire
(BEP 44 publishers re-put about every hour).

Sans-IO: ``now`` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict

from ..errors import DhtError
from .items import MAX_SALT, MAX_VALUE, Item, ItemError

__all__ = [
    "ERROR_BAD_SIGNATURE",
    "ERROR_CAS_MISMATCH",
    "ERROR_SALT_TOO_BIG",
    "ERROR_SEQ_TOO_LOW",
    "ERROR_TOO_BIG",
    "ItemStore",
    "ItemStoreError",
]

# BEP 44's error codes (the same numbers as core.dht.krpc's; repeated here so
# the store does not depend on the wire module).
ERROR_TOO_BIG = 205
ERROR_BAD_SIGNATURE = 206
ERROR_SALT_TOO_BIG = 207
ERROR_CAS_MISMATCH = 301
ERROR_SEQ_TOO_LOW = 302


class ItemStoreError(DhtError):
    """A ``put`` the store refused; ``code`` is the BEP 44 KRPC error code to reply with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ItemStore:
    """BEP 44 items by target, least recently stored first (see the module docstring)."""

    __slots__ = ("_items", "max_items", "ttl")

    def __init__(self, *, max_items: int = 700, ttl: float = 7200.0) -> None:
        self.max_items = max(1, max_items)
        self.ttl = ttl
        #: target -> (item, stored or refreshed at)
        self._items: OrderedDict[bytes, tuple[Item, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, target: bytes, now: float) -> Item | None:
        """The live item stored under ``target``, or None."""
        entry = self._items.get(target)
        if entry is None or now - entry[1] > self.ttl:
            return None
        return entry[0]

    def put(self, item: Item, now: float, *, cas: int | None = None) -> None:
        """Store ``item`` (its signature checked); raise :class:`ItemStoreError` when refused."""
        if len(item.value) > MAX_VALUE:
            raise ItemStoreError(ERROR_TOO_BIG, f"value of {len(item.value)} bytes is too big")
        if len(item.salt) > MAX_SALT:
            raise ItemStoreError(ERROR_SALT_TOO_BIG, f"salt of {len(item.salt)} bytes is too big")
        try:
            item.verify()
        except ItemError as exc:
            raise ItemStoreError(exc.code, f"invalid item: {exc}") from None
        except DhtError as exc:
            raise ItemStoreError(ERROR_BAD_SIGNATURE, f"invalid item: {exc}") from None
        target = item.target
        current = self.get(target, now)
        if item.mutable and current is not None:
            stored_seq = current.seq if current.seq is not None else -1
            new_seq = item.seq if item.seq is not None else -1
            if cas is not None and cas != stored_seq:
                raise ItemStoreError(
                    ERROR_CAS_MISMATCH, f"cas {cas} does not match stored seq {stored_seq}"
                )
            if new_seq < stored_seq or (new_seq == stored_seq and item.value != current.value):
                raise ItemStoreError(
                    ERROR_SEQ_TOO_LOW, f"seq {new_seq} is not above stored seq {stored_seq}"
                )
        if target in self._items:
            self._items.move_to_end(target)
        elif len(self._items) >= self.max_items:
            self._items.popitem(last=False)
        self._items[target] = (item, now)

    def expire(self, now: float) -> int:
        """Forget items not stored or refreshed within ``ttl``; return how many went."""
        removed = 0
        while self._items:
            target, (_, when) = next(iter(self._items.items()))
            if now - when <= self.ttl:
                break
            del self._items[target]
            removed += 1
        return removed
