"""XEP-0082 XMPP Date and Time Profiles: the DateTime profile, said once.

``CCYY-MM-DDThh:mm:ss[.sss]TZD`` (§3.3), where TZD is ``Z`` or ``±hh:mm``
(§3.1). We always write UTC with ``Z`` and, by default, milliseconds;
we read any time zone offset and any number of fractional digits (beyond
microseconds they are cut off), as other servers write them (ejabberd:
microseconds, Prosody: whole seconds). A DateTime without a time zone is
not a DateTime of the profile and is refused, as is anything that is not one
(a Date or Time profile value, a week date …).

Times are POSIX seconds (floats), as ``time.time()`` gives them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["format", "parse"]

_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")


def format(epoch: float, timespec: str = "milliseconds") -> str:     # noqa: A001
    """*epoch* as a UTC DateTime ending in ``Z``; *timespec* is ``seconds``,
    ``milliseconds`` or ``microseconds`` (as :meth:`datetime.isoformat`)."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse(text: str) -> float:
    """A DateTime (any time zone offset, any fraction) → POSIX seconds.
    Raises ValueError if *text* is not one."""
    found = _DATETIME.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not an XEP-0082 DateTime: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    if zone == "Z":
        tz = timezone.utc
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad time zone offset in {text!r}")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if zone[0] == "-" else offset)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                      micro, tzinfo=tz)             # ValueError for e.g. month 13
    return moment.timestamp()
