"""Strict request types: no coercion, and nothing a column cannot hold (contract section 15).

The lowest layer (imports nothing of the app): every request model and every query or path
parameter is built from these. A JSON value of the wrong type is refused, never converted
(`"yes"`, `1` or `"true"` are not `true`; a number is not a date); a name or id holds no
control character (C0, DEL or C1), no lone surrogate and no bidirectional override; a time
lies in the years 1970-9999 (in UTC as well); a seq fits the INTEGER columns.

FastAPI validates a JSON body as the Python objects `json.loads` made of it, so strictness
is said per type here (pydantic's strict mode would also refuse an ISO string for a date).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, BeforeValidator
from pydantic import StrictBool as StrictBool

MIN_YEAR: Final = 1970
MAX_YEAR: Final = 9999
EARLIEST: Final = datetime(MIN_YEAR, 1, 1, tzinfo=UTC)
# The seq columns (events, checkpoints, reviews' targets) are INTEGER on SQLite and
# PostgreSQL alike: a larger seq can name no event, and PostgreSQL cannot even compare it.
MAX_SEQ: Final = 2**31 - 1

# C0 controls, DEL, C1 controls, lone surrogates (UTF-16 halves: no UTF-8 exists for them,
# so they can be neither stored nor hashed), and the bidirectional embeddings, overrides
# and isolates that make a name in the log read as another.
_NOT_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
# Free text keeps tabs and line breaks.
_NOT_IN_PROSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}.*", re.DOTALL)

OUT_OF_RANGE: Final = f"outside the years {MIN_YEAR}-{MAX_YEAR}"


def name_chars(value: str) -> str:
    """A name or id: no control character, lone surrogate or bidirectional control."""
    if _NOT_IN_NAMES.search(value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


def prose_chars(value: str) -> str:
    """Free text: tabs and line breaks, but no other control character or lone surrogate."""
    if _NOT_IN_PROSE.search(value):
        raise ValueError("must not contain control characters (other than tab and line breaks)")
    return value


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank (whitespace only)")
    return value


def check_day(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the date is {OUT_OF_RANGE}")
    return value


def check_instant(value: datetime) -> datetime:
    """An aware time whose UTC instant lies in 1970-9999 (returned as given)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise ValueError(f"the time is {OUT_OF_RANGE} in UTC") from None
    if utc < EARLIEST:
        raise ValueError(f"the time is {OUT_OF_RANGE} in UTC")
    return value


def _day_string(value: object) -> object:
    # A date object comes only from Python callers (the CLI, the demo); JSON sends strings.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DAY.fullmatch(value):
        return value
    raise ValueError("expected a date as a YYYY-MM-DD string")


def _time_string(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        return value
    raise ValueError("expected an RFC 3339 time string, e.g. 2025-11-03T14:05:00-06:00")


# Metadata to put after a str type's own constraints: `Annotated[str, StringConstraints(..),
# NAME_CHARS]` (checked after stripping, so the constraints' view of the value is the one
# checked).
NAME_CHARS: Final = AfterValidator(name_chars)
PROSE_CHARS: Final = AfterValidator(prose_chars)
NOT_BLANK: Final = AfterValidator(not_blank)

Day = Annotated[date, BeforeValidator(_day_string), AfterValidator(check_day)]
"""A calendar day: a `YYYY-MM-DD` string, 1970-9999."""

Instant = Annotated[AwareDatetime, BeforeValidator(_time_string), AfterValidator(check_instant)]
"""A time with a UTC offset: an RFC 3339 string, 1970-9999 in UTC."""

NameText = Annotated[str, NAME_CHARS]
"""A name or id of any length (path and query parameters add their own limits)."""
