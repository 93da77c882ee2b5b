"""The naming rule for client and room names (PROTOCOL.md section 7), checked
on the client before anything is sent.

This is a subset of the server's rule, chosen so that it never refuses a
name the server would accept: NFC; 1 to 64 bytes of UTF-8; no control,
bidirectional-control, invisible (``Default_Ignorable_Code_Point`` or
format), private-use or noncharacter code point; something visible; no
whitespace at either end. It does not check for unassigned code points (the
server may know a newer Unicode version than this Python) and does not
compute the TR39 confusable skeleton that makes look-alike names one name
(``Alice`` and ``alice``): the server is authoritative and refuses those
with ``REFUSED`` 1, 2 or 3, which :func:`relais.Client.connect` raises as
:class:`relais.Refused`.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidName, InvalidRoom
from .protocol import MAX_NAME_LEN

# Unicode White_Space, plus U+2800 BRAILLE PATTERN BLANK (shown as nothing).
_WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x2800]
)

_BIDI_CONTROLS = frozenset(
    [0x061C, 0x200E, 0x200F] + list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A))
)

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt), as ranges.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _DEFAULT_IGNORABLE)


def _noncharacter(cp: int) -> bool:
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def name_problem(name: str, what: str = "name") -> "str | None":
    """Why ``name`` (already in NFC) breaks the rule, in the server's words,
    or ``None`` if this client-side check finds nothing wrong."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return "%s is not valid UTF-8" % what
    if not raw:
        return "%s is empty" % what
    if len(raw) > MAX_NAME_LEN:
        return "%s is %d bytes long, the maximum is %d" % (what, len(raw), MAX_NAME_LEN)
    visible = False
    for ch in name:
        cp = ord(ch)
        cat = unicodedata.category(ch)
        if cat == "Cc" or cp in (0x2028, 0x2029):
            return "%s contains a control character (U+%04X)" % (what, cp)
        if cp in _BIDI_CONTROLS:
            return "%s contains a bidirectional control (U+%04X)" % (what, cp)
        if _ignorable(cp) or cat == "Cf":
            return "%s contains an invisible character (U+%04X)" % (what, cp)
        if cat == "Co":
            return "%s contains a private-use code point (U+%04X)" % (what, cp)
        if _noncharacter(cp):
            return "%s contains an unassigned code point (U+%04X)" % (what, cp)
        if cp not in _WHITESPACE and not cat.startswith("M"):
            visible = True
    if not visible:
        return "%s has no visible character" % what
    if ord(name[0]) in _WHITESPACE or ord(name[-1]) in _WHITESPACE:
        return "%s starts or ends with whitespace" % what
    return None


def _checked(value: object, error: type, what: str) -> str:
    """``value`` in NFC; raises ``error`` (:class:`relais.InvalidName` or
    :class:`relais.InvalidRoom`) if it breaks the rule."""
    if not isinstance(value, str):
        raise error("%s must be a str, not %s" % (what, type(value).__name__), value)
    nfc = unicodedata.normalize("NFC", value)
    problem = name_problem(nfc, "name")
    if problem:
        raise error(problem, value)
    return nfc


def validate_name(name: str) -> str:
    """``name`` in NFC, the form the server registers and shows; raises
    :class:`relais.InvalidName` if it breaks the rule."""
    return _checked(name, InvalidName, "name")


def validate_room(room: "str | None") -> str:
    """``room`` in NFC ("" for the default room, ``lobby``); raises
    :class:`relais.InvalidRoom` if it breaks the rule."""
    if room is None or room == "":
        return ""
    return _checked(room, InvalidRoom, "room")
