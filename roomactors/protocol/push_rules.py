"""Push rules: the server-default ruleset, the per-user rule document, its mutations, and
rule evaluation (client-server API "Push Notifications" module, spec v1.17).

Theory of operation
-------------------
A user's effective push ruleset is *derived*, never stored whole. What is stored is a
small per-user document (:func:`empty_user_doc`) holding only what the user changed:

* their own rules, per kind, most important first, and
* overrides (``enabled`` and/or ``actions``) of server-default rules.

:func:`ruleset` merges that document with :func:`default_rules` into the shape
``GET /_matrix/client/v3/pushrules/`` returns (and the ``m.push_rules`` account-data
event carries). Mutations (:func:`put_rule`, :func:`delete_rule`, :func:`set_enabled`,
:func:`set_actions`) validate their input as ``pushrules.yaml`` describes and return a
*new* document; their input is never modified. Expected failures raise
:class:`PushRuleError`, which carries the HTTP status and Matrix error code.

:func:`evaluate` walks a merged ruleset in the spec's order (override, content, room,
sender, underride) and returns the actions of the first enabled rule whose conditions
all hold. :func:`notification_for` adds the "never notify the sender" rule and reduces
actions to ``(notify, highlight)``. Everything here is pure: no I/O, no clock, no
global state beyond compiled-pattern caches.

User document format (version 1; plain JSON)::

    {
      "version": 1,
      "rules": {                      # user-defined rules, most important first
        "override":  [{"rule_id": str, "enabled": bool, "actions": [...], "conditions": [...]}],
        "content":   [{"rule_id": str, "enabled": bool, "actions": [...], "pattern": str}],
        "room":      [{"rule_id": <room id>, "enabled": bool, "actions": [...]}],
        "sender":    [{"rule_id": <user id>, "enabled": bool, "actions": [...]}],
        "underride": [{"rule_id": str, "enabled": bool, "actions": [...], "conditions": [...]}]
      },
      "defaults": {                   # changes to server-default rules, by kind then rule_id
        "override": {".m.rule.master": {"enabled": true}},
        "underride": {".m.rule.message": {"actions": []}},
        ...
      }
    }

Missing keys read as empty, so ``{}`` is a valid (empty) document.

Spec reading decisions (each also noted where it is implemented):

* v1.17 removed the legacy mention rules (``.m.rule.contains_display_name``,
  ``.m.rule.roomnotif``, ``.m.rule.contains_user_name``; MSC4210, "Predefined Rules").
  They are therefore *off* by default; ``legacy_mentions=True`` restores them exactly as
  v1.7–v1.16 listed them, including the rule that they are skipped when the event has
  an ``m.mentions`` property ("User and room mentions", note). The ``contains_display_name``
  *condition* remains implemented (deprecated, not removed).
* Ordering ("Predefined Rules"): server-default rules rank below user-defined rules of the
  same kind, except ``.m.rule.master`` which ranks above everything. So override is
  ``[master] + user + other defaults``; content and underride are ``user + defaults``.
  (Synapse orders them the same way.)
* Word boundaries (``content.body`` matching, content rules, ``contains_display_name``): a
  matched substring must start at the start of the value, after a boundary character, or
  *on* one, and likewise at its end; so ``@room`` matches in ``hi@room`` but ``cake`` does
  not match in ``cakes``. Only ASCII letters, digits and ``_`` are word characters, as the
  spec defines. Globs have only ``*`` and ``?`` (appendices); case-insensitivity is
  per-character lower-casing.
* Error codes: unknown kind, reserved/ill-formed rule ids, unknown action names and
  deleting a server-default rule are 400 ``M_INVALID_PARAM``; ill-typed bodies are 400
  ``M_BAD_JSON``; a ``before``/``after`` anchor that is missing or a server-default rule is
  400 ``M_UNKNOWN`` (the spec's example response for ``PUT``); absent rules are 404
  ``M_NOT_FOUND``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from roomactors.protocol.filters import split_field_path

__all__ = [
    "KINDS",
    "DOC_VERSION",
    "PushRuleError",
    "PushContext",
    "default_rules",
    "empty_user_doc",
    "ruleset",
    "put_rule",
    "delete_rule",
    "set_enabled",
    "set_actions",
    "get_rule",
    "validate_kind",
    "validate_actions",
    "evaluate",
    "notification_for",
    "actions_notify",
    "actions_highlight",
    "actions_tweaks",
    "split_dotted_path",
    "glob_matches",
]

#: Rule kinds in evaluation order ("Push Rules": "in the order that they are checked").
KINDS: Final[tuple[str, ...]] = ("override", "content", "room", "sender", "underride")

DOC_VERSION: Final[int] = 1

#: "Historical Actions": accepted on input, ignored in evaluation.
_LEGACY_ACTIONS: Final[frozenset[str]] = frozenset({"dont_notify", "coalesce"})
_KNOWN_STRING_ACTIONS: Final[frozenset[str]] = frozenset({"notify"}) | _LEGACY_ACTIONS

#: Canonical JSON integer range ("event_property_is": ``[-(2**53)+1, (2**53)-1]``).
_INT_MIN: Final[int] = -(2**53) + 1
_INT_MAX: Final[int] = 2**53 - 1

#: m.room.power_levels ``notifications.room`` default; Synapse uses it for any key.
_DEFAULT_NOTIFICATION_LEVEL: Final[int] = 50

_LEGACY_MENTION_RULES: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("override", ".m.rule.contains_display_name"),
        ("override", ".m.rule.roomnotif"),
        ("content", ".m.rule.contains_user_name"),
    }
)


class PushRuleError(Exception):
    """An expected failure of a push-rule request, ready for the HTTP layer.

    ``errcode`` is the Matrix error code, ``status`` the HTTP status, ``error`` the
    human-readable message (the response body is :meth:`to_json`).
    """

    def __init__(self, errcode: str, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.errcode = errcode
        self.status = status
        self.error = error

    def to_json(self) -> dict[str, str]:
        return {"errcode": self.errcode, "error": self.error}

    def __repr__(self) -> str:
        return f"PushRuleError({self.errcode!r}, {self.error!r}, status={self.status})"


def _not_found(kind: str, rule_id: str) -> PushRuleError:
    # pushrules.yaml: 404 {"errcode": "M_NOT_FOUND", "error": "The push rule was not found."}
    return PushRuleError("M_NOT_FOUND", f"The push rule was not found: {kind}/{rule_id}", 404)


# --------------------------------------------------------------------------------------
# Server-default rules ("Predefined Rules")
# --------------------------------------------------------------------------------------

_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_SOUND_RING: Final = {"set_tweak": "sound", "value": "ring"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, str]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _localpart(user_id: str) -> str:
    body = user_id[1:] if user_id.startswith("@") else user_id
    return body.split(":", 1)[0]


def _rule(rule_id: str, actions: list, *, conditions: list | None = None, pattern: str | None = None,
          enabled: bool = True, default: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"rule_id": rule_id, "default": default, "enabled": enabled, "actions": actions}
    if conditions is not None:
        out["conditions"] = conditions
    if pattern is not None:
        out["pattern"] = pattern
    return out


def _default_override(user_id: str, legacy: bool) -> list[dict[str, Any]]:
    """"Default Override Rules", in the order the spec lists them (v1.17)."""
    rules = [
        _rule(".m.rule.master", [], conditions=[], enabled=False),
        _rule(".m.rule.suppress_notices", [], conditions=[_match("content.msgtype", "m.notice")]),
        _rule(
            ".m.rule.invite_for_me",
            ["notify", dict(_SOUND_DEFAULT)],
            conditions=[
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
        ),
        _rule(".m.rule.member_event", [], conditions=[_match("type", "m.room.member")]),
        _rule(
            ".m.rule.is_user_mention",
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
            conditions=[{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id}],
        ),
    ]
    if legacy:
        # v1.16 "Default Override Rules" (removed in v1.17 by MSC4210): between
        # is_user_mention and is_room_mention.
        rules.append(
            _rule(
                ".m.rule.contains_display_name",
                ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
                conditions=[{"kind": "contains_display_name"}],
            )
        )
    rules.append(
        _rule(
            ".m.rule.is_room_mention",
            ["notify", dict(_HIGHLIGHT)],
            conditions=[
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
        )
    )
    if legacy:
        rules.append(
            _rule(
                ".m.rule.roomnotif",
                ["notify", dict(_HIGHLIGHT)],
                conditions=[
                    _match("content.body", "@room"),
                    {"kind": "sender_notification_permission", "key": "room"},
                ],
            )
        )
    rules += [
        _rule(
            ".m.rule.tombstone",
            ["notify", dict(_HIGHLIGHT)],
            conditions=[_match("type", "m.room.tombstone"), _match("state_key", "")],
        ),
        _rule(".m.rule.reaction", [], conditions=[_match("type", "m.reaction")]),
        _rule(
            ".m.rule.room.server_acl",
            [],
            conditions=[_match("type", "m.room.server_acl"), _match("state_key", "")],
        ),
        _rule(
            ".m.rule.suppress_edits",
            [],
            conditions=[{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        ),
    ]
    return rules


def _default_content(user_id: str, legacy: bool) -> list[dict[str, Any]]:
    """v1.17 has no default content rules; v1.16 had ``.m.rule.contains_user_name``."""
    if not legacy:
        return []
    return [
        _rule(
            ".m.rule.contains_user_name",
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
            pattern=_localpart(user_id),
        )
    ]


def _default_underride() -> list[dict[str, Any]]:
    """"Default Underride Rules", in the spec's order."""
    return [
        _rule(".m.rule.call", ["notify", dict(_SOUND_RING)], conditions=[_match("type", "m.call.invite")]),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            ["notify", dict(_SOUND_DEFAULT)],
            conditions=[{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            ["notify", dict(_SOUND_DEFAULT)],
            conditions=[{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ),
        _rule(".m.rule.message", ["notify"], conditions=[_match("type", "m.room.message")]),
        _rule(".m.rule.encrypted", ["notify"], conditions=[_match("type", "m.room.encrypted")]),
    ]


def _defaults_by_kind(user_id: str, legacy: bool) -> dict[str, list[dict[str, Any]]]:
    return {
        "override": _default_override(user_id, legacy),
        "content": _default_content(user_id, legacy),
        "room": [],
        "sender": [],
        "underride": _default_underride(),
    }


def _known_default_ids() -> dict[str, frozenset[str]]:
    """Every server-default rule id per kind, legacy ones included (for mutations)."""
    return {k: frozenset(r["rule_id"] for r in rules) for k, rules in _defaults_by_kind("@_:_", True).items()}


_DEFAULT_IDS: Final[dict[str, frozenset[str]]] = _known_default_ids()


def default_rules(user_id: str, *, legacy_mentions: bool = False) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The server-default ruleset for ``user_id`` in the ``GET /pushrules/`` shape.

    Every rule is a fresh dict (callers may mutate the result). ``legacy_mentions``
    adds the three rules v1.17 removed (see the module docstring).
    """
    return {"global": _defaults_by_kind(user_id, legacy_mentions)}


# --------------------------------------------------------------------------------------
# The per-user document and the merged ruleset
# --------------------------------------------------------------------------------------


def empty_user_doc() -> dict[str, Any]:
    """A user document with no custom rules and no changes to server-default rules."""
    return {"version": DOC_VERSION, "rules": {k: [] for k in KINDS}, "defaults": {k: {} for k in KINDS}}


def _user_rules(doc: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    rules = doc.get("rules")
    if not isinstance(rules, Mapping):
        return []
    got = rules.get(kind)
    return [r for r in got if isinstance(r, Mapping) and isinstance(r.get("rule_id"), str)] if isinstance(got, list) else []


def _default_changes(doc: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    defaults = doc.get("defaults")
    if not isinstance(defaults, Mapping):
        return {}
    got = defaults.get(kind)
    return got if isinstance(got, Mapping) else {}


def _present_user_rule(kind: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored user rule in the PushRule shape (push_rule.yaml): ``conditions`` only for
    override/underride, ``pattern`` only for content."""
    out: dict[str, Any] = {
        "rule_id": stored["rule_id"],
        "default": False,
        "enabled": stored.get("enabled", True) is not False,
        "actions": copy.deepcopy(stored.get("actions", [])),
    }
    if kind in ("override", "underride"):
        out["conditions"] = copy.deepcopy(stored.get("conditions", []))
    elif kind == "content":
        out["pattern"] = stored.get("pattern", "")
    return out


def _apply_default_change(rule: dict[str, Any], change: object) -> dict[str, Any]:
    if isinstance(change, Mapping):
        if isinstance(change.get("enabled"), bool):
            rule["enabled"] = change["enabled"]
        if isinstance(change.get("actions"), list):
            rule["actions"] = copy.deepcopy(change["actions"])
    return rule


def ruleset(user_id: str, doc: Mapping[str, Any], *, legacy_mentions: bool = False) -> dict[str, Any]:
    """``user_id``'s effective ruleset: server defaults merged with ``doc``, in the
    ``GET /_matrix/client/v3/pushrules/`` shape (also the ``m.push_rules`` content).

    Order within a kind ("Predefined Rules"): server-default rules "operate at a lower
    priority than user-defined rules, except for the ``.m.rule.master`` rule which has
    always a higher priority than any other rule". Hence override is
    ``[.m.rule.master] + user + remaining defaults`` and every other kind is
    ``user + defaults``.
    """
    defaults = _defaults_by_kind(user_id, legacy_mentions)
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        changes = _default_changes(doc, kind)
        merged_defaults = [_apply_default_change(r, changes.get(r["rule_id"])) for r in defaults[kind]]
        user = [_present_user_rule(kind, r) for r in _user_rules(doc, kind)]
        if kind == "override":
            head = [r for r in merged_defaults if r["rule_id"] == ".m.rule.master"]
            tail = [r for r in merged_defaults if r["rule_id"] != ".m.rule.master"]
            out[kind] = head + user + tail
        else:
            out[kind] = user + merged_defaults
    return {"global": out}


def _global(rules: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept either the ``{"global": {...}}`` wrapper or the inner ruleset."""
    inner = rules.get("global")
    return inner if isinstance(inner, Mapping) else rules


def get_rule(rules: Mapping[str, Any], kind: str, rule_id: str) -> dict[str, Any]:
    """A copy of rule ``kind/rule_id`` from a merged ruleset (:func:`ruleset`'s result,
    with or without the ``global`` wrapper); ``M_NOT_FOUND`` (404) if absent."""
    validate_kind(kind)
    for rule in _global(rules).get(kind) or ():
        if isinstance(rule, Mapping) and rule.get("rule_id") == rule_id:
            return copy.deepcopy(dict(rule))
    raise _not_found(kind, rule_id)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def validate_kind(kind: object) -> str:
    """``kind`` if it is one of the five rule kinds (pushrules.yaml ``kind`` enum), else
    ``M_INVALID_PARAM`` (400)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise PushRuleError("M_INVALID_PARAM", f"Unknown push rule kind: {kind!r}")
    return kind


def validate_actions(actions: object) -> list[Any]:
    """A deep copy of ``actions`` if valid ("Actions"), else :class:`PushRuleError`.

    Allowed: ``"notify"``; the historical ``"dont_notify"`` and ``"coalesce"`` (which
    "Historical Actions" says MUST be ignored, not rejected; they are kept as given and
    ignored by evaluation); and objects with a string ``set_tweak`` (any other keys,
    e.g. ``value``, pass through: "Tweaks are passed transparently"). Wrong JSON types
    are ``M_BAD_JSON``; an unknown action name is ``M_INVALID_PARAM``.
    """
    if not isinstance(actions, list):
        raise PushRuleError("M_BAD_JSON", "'actions' must be an array")
    for action in actions:
        if isinstance(action, str):
            if action not in _KNOWN_STRING_ACTIONS:
                raise PushRuleError("M_INVALID_PARAM", f"Unrecognised push rule action: {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise PushRuleError("M_INVALID_PARAM", "Object actions must have a string 'set_tweak'")
        else:
            raise PushRuleError("M_BAD_JSON", "Each action must be a string or an object")
    return copy.deepcopy(actions)


def _validate_conditions(conditions: object) -> list[dict[str, Any]]:
    """Conditions are kept as given provided each is an object with a string ``kind``.

    Parameters are not checked: "Unrecognised conditions MUST NOT match any events", and
    a known condition with missing/ill-typed parameters simply never matches either.
    """
    if not isinstance(conditions, list):
        raise PushRuleError("M_BAD_JSON", "'conditions' must be an array")
    for cond in conditions:
        if not isinstance(cond, dict) or not isinstance(cond.get("kind"), str):
            raise PushRuleError("M_BAD_JSON", "Each condition must be an object with a string 'kind'")
    return copy.deepcopy(conditions)


def _validate_rule_id(rule_id: object) -> str:
    # pushrules.yaml PUT ruleId: "If the string starts with a dot ("."), the request MUST be
    # rejected as this is reserved for server-default rules. Slashes ("/") and
    # backslashes ("\\") are also not allowed."
    if not isinstance(rule_id, str) or not rule_id:
        raise PushRuleError("M_INVALID_PARAM", "rule_id must be a non-empty string")
    if rule_id.startswith("."):
        raise PushRuleError("M_INVALID_PARAM", "rule_ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise PushRuleError("M_INVALID_PARAM", "rule_id may not contain slashes or backslashes")
    return rule_id


# --------------------------------------------------------------------------------------
# Mutations (each returns a new document)
# --------------------------------------------------------------------------------------


def _copy_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised deep copy of ``doc`` (every kind present in ``rules``/``defaults``)."""
    out = empty_user_doc()
    for kind in KINDS:
        out["rules"][kind] = copy.deepcopy(_user_rules(doc, kind))
        out["defaults"][kind] = copy.deepcopy(dict(_default_changes(doc, kind)))
    for key, value in doc.items():  # keep unknown top-level keys (forward compatibility)
        if key not in ("version", "rules", "defaults"):
            out[key] = copy.deepcopy(value)
    return out


def _index(rules: Sequence[Mapping[str, Any]], rule_id: str) -> int | None:
    for i, rule in enumerate(rules):
        if rule.get("rule_id") == rule_id:
            return i
    return None


def put_rule(
    doc: Mapping[str, Any],
    user_id: str,
    kind: str,
    rule_id: str,
    body: object,
    *,
    before: str | None = None,
    after: str | None = None,
) -> dict[str, Any]:
    """``PUT /pushrules/global/{kind}/{ruleId}``: create or update a user-defined rule.

    * ``body.actions`` is required (:func:`validate_actions`).
    * override/underride: ``body.conditions`` (default ``[]``: "A rule with no conditions
      always matches"). content: ``body.pattern`` (a string) is required. room/sender:
      the ``rule_id`` *is* the room/user ID ("Push Rules"); other body keys are ignored.
    * Created rules are enabled ("When creating push rules, they MUST be enabled by
      default") and, without ``before``/``after``, become "the most important user
      defined rule among rules of the same kind". An update keeps the rule's
      ``enabled`` flag and, without ``before``/``after``, its position.
    * ``before``/``after`` name a *user-defined* rule of the same kind ("It is not
      possible to add a rule relative to a predefined server rule"). If both are given,
      ``before`` decides ("must be the next most important rule with respect to the rule
      identified by ``before``"). A missing anchor is 400 ``M_UNKNOWN``, as the spec's
      example response ("before/after rule not found: someRuleId") shows.

    ``user_id`` is accepted for symmetry with the other mutations; user rules do not
    depend on it.
    """
    del user_id
    validate_kind(kind)
    _validate_rule_id(rule_id)
    if not isinstance(body, Mapping):
        raise PushRuleError("M_BAD_JSON", "The request body must be a JSON object")
    if "actions" not in body:
        raise PushRuleError("M_BAD_JSON", "Missing 'actions'")
    new_rule: dict[str, Any] = {"rule_id": rule_id, "enabled": True, "actions": validate_actions(body["actions"])}
    if kind in ("override", "underride"):
        new_rule["conditions"] = _validate_conditions(body.get("conditions", []))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise PushRuleError("M_BAD_JSON", "Content rules need a string 'pattern'")
        new_rule["pattern"] = pattern
    for name, anchor in (("before", before), ("after", after)):
        if anchor is not None and not isinstance(anchor, str):
            raise PushRuleError("M_INVALID_PARAM", f"'{name}' must be a string")

    out = _copy_doc(doc)
    rules: list[dict[str, Any]] = out["rules"][kind]
    existing = _index(rules, rule_id)
    if existing is not None:
        new_rule["enabled"] = rules[existing].get("enabled", True) is not False
    anchor_name, anchor = ("before", before) if before is not None else ("after", after)
    if anchor is None:
        if existing is not None:
            rules[existing] = new_rule
        else:
            rules.insert(0, new_rule)
        return out
    if anchor.startswith("."):
        raise PushRuleError("M_UNKNOWN", f"{anchor_name} rule cannot be a server-default rule: {anchor}")
    if existing is not None:
        del rules[existing]
    where = _index(rules, anchor)
    if where is None:
        raise PushRuleError("M_UNKNOWN", f"before/after rule not found: {anchor}")
    rules.insert(where if anchor_name == "before" else where + 1, new_rule)
    return out


def delete_rule(doc: Mapping[str, Any], user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
    """``DELETE /pushrules/global/{kind}/{ruleId}``: remove a user-defined rule.

    A server-default rule cannot be deleted (400 ``M_INVALID_PARAM``; it can be
    disabled instead); an unknown rule is 404 ``M_NOT_FOUND``.
    """
    del user_id
    validate_kind(kind)
    if isinstance(rule_id, str) and rule_id in _DEFAULT_IDS[kind]:
        raise PushRuleError("M_INVALID_PARAM", f"Server-default push rules cannot be deleted: {rule_id}")
    out = _copy_doc(doc)
    where = _index(out["rules"][kind], rule_id)
    if where is None:
        raise _not_found(kind, rule_id)
    del out["rules"][kind][where]
    return out


def _modify(doc: Mapping[str, Any], kind: str, rule_id: str, field: str, value: Any) -> dict[str, Any]:
    """Set ``field`` on a user rule, or record it as a change to a server-default rule.

    Server-default ids are recognised from the full set this module knows (legacy mention
    rules included), so old clients that toggle e.g. ``.m.rule.contains_display_name``
    get 200 rather than 404 even when those rules are not served.
    """
    validate_kind(kind)
    out = _copy_doc(doc)
    if isinstance(rule_id, str) and rule_id in _DEFAULT_IDS[kind]:
        change = dict(out["defaults"][kind].get(rule_id) or {})
        change[field] = value
        out["defaults"][kind][rule_id] = change
        return out
    where = _index(out["rules"][kind], rule_id)
    if where is None:
        raise _not_found(kind, rule_id)
    out["rules"][kind][where][field] = value
    return out


def set_enabled(doc: Mapping[str, Any], user_id: str, kind: str, rule_id: str, enabled: bool) -> dict[str, Any]:
    """``PUT /pushrules/global/{kind}/{ruleId}/enabled`` (user or server-default rule)."""
    del user_id
    if not isinstance(enabled, bool):
        raise PushRuleError("M_BAD_JSON", "'enabled' must be a boolean")
    return _modify(doc, kind, rule_id, "enabled", enabled)


def set_actions(doc: Mapping[str, Any], user_id: str, kind: str, rule_id: str, actions: object) -> dict[str, Any]:
    """``PUT /pushrules/global/{kind}/{ruleId}/actions``: "This can be used to change the
    actions of builtin rules"."""
    del user_id
    return _modify(doc, kind, rule_id, "actions", validate_actions(actions))


# --------------------------------------------------------------------------------------
# Matching primitives
# --------------------------------------------------------------------------------------

_MISSING: Final = object()


@lru_cache(maxsize=1024)
def split_dotted_path(key: str) -> tuple[str, ...]:
    """Split a dot-separated property path (appendices, "Dot-separated property paths"):
    the same grammar as filters' ``event_fields``, so one implementation serves both
    (``roomactors.protocol.filters.split_field_path``)."""
    return tuple(split_field_path(key))


def _lookup(event: Mapping[str, Any], key: str) -> Any:
    value: Any = event
    for part in split_dotted_path(key):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_word_char(c: str) -> bool:
    # "Content-specific rules"/event_match: a word boundary is "the start or end of the
    # value, or any character not in the sets [A-Z], [a-z], [0-9] or _".
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "_"


def _can_start(text: str, p: int) -> bool:
    """A matched substring may start at index ``p``: at the start of the value, right after
    a boundary character, or on one (so ``@room`` matches in ``hi@room``: the pattern
    supplies its own boundary, as in Synapse)."""
    return p == 0 or not _is_word_char(text[p - 1]) or (p < len(text) and not _is_word_char(text[p]))


def _can_end(text: str, p: int) -> bool:
    """A matched substring may end just before index ``p`` (mirror of :func:`_can_start`)."""
    return p == len(text) or not _is_word_char(text[p]) or (p > 0 and not _is_word_char(text[p - 1]))


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    """Case-fold one character to one character ("The exact meaning of 'case
    insensitive' is defined by the implementation"): its lower case when that is a single
    character, else itself. Keeping lengths equal keeps indices aligned with the input."""
    low = c.lower()
    return low if len(low) == 1 else c


def _fold(text: str) -> str:
    return "".join(map(_fold_char, text))


_STAR: Final = 0
_ANY: Final = 1


@dataclass(frozen=True, slots=True)
class _Glob:
    """A compiled glob (appendices, "Glob-style matching": ``*`` is zero or more
    characters, ``?`` exactly one; everything else is literal)."""

    tokens: tuple[int | str, ...]  # _STAR, _ANY, or one folded literal character
    literal: str | None  # the folded pattern when it has no wildcards

    def _closure(self, states: Iterable[int]) -> set[int]:
        out: set[int] = set()
        m = len(self.tokens)
        for i in states:
            while True:
                out.add(i)
                if i < m and self.tokens[i] == _STAR:
                    i += 1
                    continue
                break
        return out

    def _step(self, states: set[int], c: str) -> set[int]:
        nxt: set[int] = set()
        m = len(self.tokens)
        for i in states:
            if i >= m:
                continue
            tok = self.tokens[i]
            if tok == _STAR:
                nxt.add(i)
            elif tok == _ANY or tok == c:
                nxt.add(i + 1)
        return self._closure(nxt) if nxt else nxt

    def matches(self, text: str, *, words: bool) -> bool:
        """Whole-value match, or (``words``) a match of any substring that starts and ends
        at a word boundary. An NFA simulation: linear in ``len(text) * len(pattern)``,
        with no backtracking blow-up on patterns like ``*a*a*a*b``."""
        folded = _fold(text)
        n = len(text)
        if self.literal is not None:
            if not words:
                return folded == self.literal
            return _find_word(folded, text, self.literal)
        m = len(self.tokens)
        if not words:
            live = self._closure((0,))
            for c in folded:
                live = self._step(live, c)
                if not live:
                    return False
            return m in live
        start = self._closure((0,))
        states: set[int] = set()
        for p in range(n + 1):
            if _can_start(text, p):
                states |= start
            if m in states and _can_end(text, p):
                return True
            if p == n:
                break
            states = self._step(states, folded[p])
        return False


def _find_word(folded: str, text: str, needle: str) -> bool:
    """``needle`` (already folded) occurs in ``folded`` bounded by word boundaries of
    ``text`` (same length as ``folded``)."""
    k = len(needle)
    start = folded.find(needle)
    while start != -1:
        if _can_start(text, start) and _can_end(text, start + k):
            return True
        start = folded.find(needle, start + 1)
    return False


@lru_cache(maxsize=1024)
def _compile_glob(pattern: str) -> _Glob:
    tokens: list[int | str] = []
    for c in pattern:
        if c == "*":
            if tokens and tokens[-1] == _STAR:
                continue  # "**" is "*"
            tokens.append(_STAR)
        elif c == "?":
            tokens.append(_ANY)
        else:
            tokens.append(_fold_char(c))
    literal = "".join(t for t in tokens if isinstance(t, str))
    has_wildcard = any(not isinstance(t, str) for t in tokens)
    return _Glob(tuple(tokens), None if has_wildcard else literal)


def glob_matches(pattern: str, value: str, *, word_boundary: bool = False) -> bool:
    """Case-insensitive glob match of ``pattern`` against the whole of ``value``, or with
    ``word_boundary`` against any substring of it starting and ending at a word boundary
    (the ``content.body`` rule of ``event_match`` and of content rules)."""
    return _compile_glob(pattern).matches(value, words=word_boundary)


def _simple_value(value: object) -> bool:
    """A non-compound canonical-JSON value: string, integer in range, boolean, null."""
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and _INT_MIN <= value <= _INT_MAX


def _exactly_equal(a: object, b: object) -> bool:
    """Equality with no type casting ("do not cast types": ``1`` is not ``true``)."""
    if not (_simple_value(a) and _simple_value(b)):
        return False
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushContext:
    """What evaluation needs beyond the event, for one recipient.

    * ``user_id``: the recipient (whose rules are evaluated).
    * ``display_name``: the recipient's display name *in this room* (``contains_display_name``).
    * ``room_member_count``: joined members of the room (``room_member_count``).
    * ``power_levels``: the *content* of the room's current ``m.room.power_levels`` event,
      or ``None``; only ``notifications`` is read (``sender_notification_permission``).
    * ``sender_power_level``: the sender's power level as the auth rules compute it
      (``auth.get_power_level``; ``math.inf`` for v12 creators), or ``None`` when it is
      unknown (e.g. an outlier), in which case permission conditions do not match.
    """

    user_id: str
    display_name: str | None = None
    room_member_count: int = 0
    power_levels: Mapping[str, Any] | None = None
    sender_power_level: int | float | None = 0


_MEMBER_COUNT_OPS: Final = {
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _member_count_matches(is_: object, count: int) -> bool:
    """``room_member_count``: "A decimal integer optionally prefixed by one of, ==, <, >,
    >= or <=... If no prefix is present, this parameter defaults to ==." Anything else
    never matches."""
    if not isinstance(is_, str):
        return False
    for prefix in ("==", "<=", ">=", "<", ">", ""):
        if is_.startswith(prefix):
            number = is_[len(prefix):]
            if number and number.isascii() and number.isdigit():
                return _MEMBER_COUNT_OPS[prefix or "=="](count, int(number))
            return False
    return False  # pragma: no cover - "" always matches


def _level(value: object) -> int | None:
    """A power level from a power-levels event that the auth rules already accepted:
    an integer, a decimal string (room v1–v9) or a finite float (v1–v5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        s = value.strip()
        body = s[1:] if s[:1] in "+-" else s
        if body and body.isascii() and body.isdigit():
            return int(s)
        return None
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return int(value)
    return None


def _notification_level(power_levels: Mapping[str, Any] | None, key: str) -> int:
    # m.room.power_levels: notifications.room "Defaults to 50 if unspecified"; Synapse
    # applies 50 to any key, and so do we.
    if isinstance(power_levels, Mapping):
        notifications = power_levels.get("notifications")
        if isinstance(notifications, Mapping) and key in notifications:
            level = _level(notifications[key])
            if level is not None:
                return level
    return _DEFAULT_NOTIFICATION_LEVEL


def _condition_matches(cond: object, event: Mapping[str, Any], ctx: PushContext) -> bool:
    """One condition ("Conditions"). Unknown kinds and malformed parameters never match."""
    if not isinstance(cond, Mapping):
        return False
    kind = cond.get("kind")
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = _lookup(event, key)
        # "If the property ... is completely absent from the event, or does not have a
        # string value, then the condition will not match, even if pattern is *."
        if not isinstance(value, str):
            return False
        # "As a special case, if key is content.body, then pattern must instead match any
        # substring of the value of the property which starts and ends at a word boundary."
        return glob_matches(pattern, value, word_boundary=(key == "content.body"))
    if kind == "event_property_is":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        return _exactly_equal(_lookup(event, key), cond["value"])
    if kind == "event_property_contains":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        value = _lookup(event, key)
        if not isinstance(value, list):
            return False
        wanted = cond["value"]
        return any(_exactly_equal(item, wanted) for item in value)
    if kind == "contains_display_name":
        # Deprecated in v1.17 but still defined: content.body "contains the owner's
        # display name in that room". Matched literally (not as a glob), case-
        # insensitively, on word boundaries like content.body event_match; an empty or
        # absent display name never matches (it would match everything).
        name = ctx.display_name
        body = _lookup(event, "content.body")
        if not name or not isinstance(body, str):
            return False
        return _find_word(_fold(body), body, _fold(name))
    if kind == "room_member_count":
        return _member_count_matches(cond.get("is"), ctx.room_member_count)
    if kind == "sender_notification_permission":
        key = cond.get("key")
        if not isinstance(key, str) or ctx.sender_power_level is None:
            return False
        return ctx.sender_power_level >= _notification_level(ctx.power_levels, key)
    return False  # "Unrecognised conditions MUST NOT match any events"


def _rule_matches(kind: str, rule: Mapping[str, Any], event: Mapping[str, Any], ctx: PushContext) -> bool:
    if kind in ("override", "underride"):
        conditions = rule.get("conditions", [])
        if not isinstance(conditions, list):
            return False
        return all(_condition_matches(c, event, ctx) for c in conditions)
    if kind == "content":
        # Content rules match `pattern` on content.body at word boundaries ("Push Rules").
        pattern, body = rule.get("pattern"), _lookup(event, "content.body")
        return isinstance(pattern, str) and isinstance(body, str) and glob_matches(pattern, body, word_boundary=True)
    if kind == "room":
        return event.get("room_id") == rule.get("rule_id")
    if kind == "sender":
        return event.get("sender") == rule.get("rule_id")
    return False


def _iter_rules(rules: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    inner = _global(rules)
    for kind in KINDS:
        got = inner.get(kind)
        if isinstance(got, list):
            for rule in got:
                if isinstance(rule, Mapping):
                    yield kind, rule


def evaluate(rules: Mapping[str, Any], event: Mapping[str, Any], ctx: PushContext) -> list[Any]:
    """The actions of the first enabled rule of ``rules`` (a merged ruleset, with or
    without the ``global`` wrapper) that matches ``event``, or ``[]``.

    Kinds are walked override, content, room, sender, underride; "Disabled rules never
    match". While the legacy mention rules are present (``legacy_mentions=True``) they
    are skipped for events whose content has an ``m.mentions`` property (the
    compatibility behaviour of spec v1.7–v1.16, "User and room mentions"). The returned
    list is a copy; historical actions are left in it (see :func:`actions_notify`).
    This function does not apply the "not for the sender's own events" rule; see
    :func:`notification_for`.
    """
    content = event.get("content")
    has_mentions = isinstance(content, Mapping) and "m.mentions" in content
    for kind, rule in _iter_rules(rules):
        if rule.get("enabled", True) is False:
            continue
        if has_mentions and (kind, rule.get("rule_id")) in _LEGACY_MENTION_RULES and rule.get("default") is True:
            continue
        if _rule_matches(kind, rule, event, ctx):
            actions = rule.get("actions", [])
            return copy.deepcopy(list(actions)) if isinstance(actions, list) else []
    return []


def actions_notify(actions: Iterable[Any]) -> bool:
    """Whether ``actions`` notify: they contain ``"notify"``. Historical actions
    (``dont_notify``, ``coalesce``) are ignored ("Historical Actions")."""
    return any(a == "notify" for a in actions if isinstance(a, str))


def actions_tweaks(actions: Iterable[Any]) -> dict[str, Any]:
    """The ``tweaks`` dictionary ``actions`` set, later ``set_tweak`` winning. A
    ``highlight`` tweak "given with no value" is ``True``; other value-less tweaks are
    left out (no value to send)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            if "value" in action:
                tweaks[name] = copy.deepcopy(action["value"])
            elif name == "highlight":
                tweaks[name] = True
    return tweaks


def actions_highlight(actions: Iterable[Any]) -> bool:
    """The ``highlight`` tweak: ``True`` when set with no value or with ``true``; false if
    absent ("If no highlight tweak is given at all then the value of highlight is defined
    to be false") or set to anything else."""
    return actions_tweaks(actions).get("highlight", False) is True


def notification_for(rules: Mapping[str, Any], event: Mapping[str, Any], ctx: PushContext) -> tuple[bool, bool]:
    """``(notify, highlight)`` for ``ctx.user_id`` and ``event``.

    "Homeservers MUST NOT notify the Push Gateway for events that the user has sent
    themselves" ("Push Rules"; "Server behaviour": rules run for local users "excluding
    the sender"), so the sender's own events are ``(False, False)``. ``highlight`` is only
    reported together with ``notify``: a matched rule without ``notify`` produces no
    notification to highlight.
    """
    if event.get("sender") == ctx.user_id:
        return (False, False)
    actions = evaluate(rules, event, ctx)
    notify = actions_notify(actions)
    return (notify, notify and actions_highlight(actions))
