"""Canonical JSON (spec appendices, "Canonical JSON") and the v6+ number rules.

Theory of operation
-------------------
:func:`canonical_json` encodes a JSON-compatible Python value as the shortest UTF-8
JSON with object keys sorted by code point. One pass over the value classifies it:

* the common case (only ``str``/``int``/``bool``/``None``/``dict``/``list`` with
  integers inside ±(2**53−1)) goes to ``orjson.dumps(..., OPT_SORT_KEYS)``, which is
  byte-identical to the reference encoder for such values and much faster;
* anything else (floats, big integers — possible in room versions 1–5, which the
  spec says servers SHOULD tolerate) takes the stdlib encoder. A float with an
  integral value is written as an integer, as the appendix's ``1e10`` →
  ``10000000000`` example requires; other finite floats use Python's shortest
  round-trip form (what the wider federation already hashes); NaN and ±Infinity
  are not JSON and raise :class:`InvalidEvent`.

:func:`check_json_numbers` is the room-version gate: from v6 on
(rooms/fragments/v6-canonical-json) any float, or integer outside
[-(2**53)+1, (2**53)-1], makes the value invalid.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from .errors import InvalidEvent
from .room_versions import get_rules

__all__ = ["canonical_json", "check_json_numbers", "is_plain_json", "CANONICAL_INT_MIN", "CANONICAL_INT_MAX"]

CANONICAL_INT_MAX = 2**53 - 1
CANONICAL_INT_MIN = -(2**53) + 1

_ORJSON_OPTS = orjson.OPT_SORT_KEYS


def _needs_slow_path(value: Any) -> bool:
    """True if ``value`` holds a float or an out-of-range integer; raises on non-JSON."""
    slow = False
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX:
                slow = True
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    raise InvalidEvent(f"JSON object key {k!r} is not a string", rule="appendices: Canonical JSON")
                stack.append(item)
        elif t is list or t is tuple:
            stack.extend(v)
        elif t is float:
            if not math.isfinite(v):
                raise InvalidEvent(f"{v!r} is not a JSON number", rule="appendices: Canonical JSON")
            slow = True
        elif isinstance(v, (str, int, float, dict, list, tuple)):
            # Subclasses (e.g. IntEnum, frozendict-likes): normalise via the slow path.
            stack.append(_plain(v))
        else:
            raise InvalidEvent(f"{t.__name__} is not a JSON value", rule="appendices: Canonical JSON")
    return slow


def is_plain_json(value: Any) -> bool:
    """True if ``value`` holds only exact ``dict`` (``str`` keys), ``list``, ``str``,
    ``bool``, ``None`` and ``int`` inside the canonical range — no floats, big
    integers, tuples or subclasses.

    For such a value :func:`canonical_json` is exactly ``orjson.dumps(value,
    option=OPT_SORT_KEYS)`` (when that succeeds: it raises on lone surrogates and
    nesting beyond 255 levels), ``orjson.loads(orjson.dumps(value))`` is an exact
    deep copy keeping key order, and :func:`check_json_numbers` passes in every room
    version. The fast signing path (:mod:`.signing`) relies on these three facts.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX:
                return False
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    return False
                push(item)
        elif t is list:
            extend(v)
        else:
            return False
    return True


def _plain(v: Any) -> Any:
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, dict):
        return dict(v)
    return list(v)


def _normalise(value: Any) -> Any:
    """Copy of ``value`` with integral floats as ints and subclasses as plain types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)  # "-0" must not appear and 1e10 is 10000000000 (appendix example)
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    return [_normalise(v) for v in value]


def canonical_json(value: Any) -> bytes:
    """The canonical JSON encoding of ``value`` (spec appendices, "Canonical JSON").

    Raises :class:`InvalidEvent` for values that are not JSON (NaN, non-string keys,
    unsupported types, lone surrogates).
    """
    try:
        if not _needs_slow_path(value):
            return orjson.dumps(value, option=_ORJSON_OPTS)
        return json.dumps(
            _normalise(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, orjson.JSONEncodeError, UnicodeEncodeError) as e:
        if isinstance(e, InvalidEvent):
            raise
        raise InvalidEvent(f"value is not encodable as canonical JSON: {e}", rule="appendices: Canonical JSON") from None


def check_json_numbers(value: Any, room_version: str) -> None:
    """Raise :class:`InvalidEvent` if ``value`` holds numbers ``room_version`` forbids.

    Room versions 6+ (fragments/v6-canonical-json) require every number to be an
    integer in [-(2**53)+1, (2**53)-1]; earlier versions only reject non-JSON
    numbers (NaN, ±Infinity).
    """
    strict = get_rules(room_version).strict_canonical_json
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int):
            if strict and not CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX:
                raise InvalidEvent(
                    f"integer {v} is outside the canonical JSON range", rule="rooms v6: canonical JSON"
                )
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise InvalidEvent(f"{v!r} is not a JSON number", rule="appendices: Canonical JSON")
            if strict:
                raise InvalidEvent(f"float {v!r} is not allowed", rule="rooms v6: canonical JSON")
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            raise InvalidEvent(f"{type(v).__name__} is not a JSON value", rule="appendices: Canonical JSON")
