"""Passwords out of storage URLs before anything is printed or written: the one masking function.

A storage URL most often reaches a log when it is mistyped, so ``mask_url`` does not parse it: it masks
every span that a URL parser (urllib, SQLAlchemy) or a ``user:password@`` pattern could read as a
password, malformed URLs included. Over-masking is harmless; a printed password is not.
"""
from __future__ import annotations

import re
import urllib.parse

MASK = "***"

# user:password@, the password running to the LAST '@' of the text (SQLAlchemy stops at the first '@',
# urllib at the last; spaces, '/', ':' and newlines may be part of a careless password). Either after a
# scheme ("postgresql://", "postgresql:/") or "//", where the user is what SQLAlchemy takes for one (no
# ':' or '/'), so a well-formed URL keeps its scheme and user; or bare ("user:pw@", "postgresql:pw@"),
# where the password must not start with a space (prose, "Error: ...") or "//" (a URL without password).
_USERINFO = re.compile(r"(?P<lead>[A-Za-z][\w+.-]*:/+|/+)(?P<user>[^:/]*):.*@"
                       r"|(?P<bare>[^:/@\s'\"]*):(?!\s|//).*@", re.DOTALL)
# key= in a query string or a libpq "key=value key=value" string; a password's value runs to the next '&'
# (the query separator) or the end of the text: spaces may be part of it, and urllib drops newlines and tabs
_KEY = re.compile(r"(?:^|(?<=[?&;\s'\"(,]))(?P<key>[^=?&;#\s'\"(,]+)=")
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)  # password, sslpassword, passwd, pwd, ...


def _userinfo(m: re.Match) -> str:
    if m.group("lead") is None:
        return f"{m.group('bare')}:{MASK}@"
    return f"{m.group('lead')}{m.group('user')}:{MASK}@"


def mask_url(text: str) -> str:
    """``text`` (a storage URL, or a message quoting one) with every possible password replaced by ``***``:
    the ``user:password@`` part and the value of any parameter such as ``?password=`` (libpq and SQLAlchemy
    accept both)."""
    text = _USERINFO.sub(_userinfo, text)
    out, done = [], 0
    for m in _KEY.finditer(text):
        if m.start() >= done and _SECRET_KEY.search(urllib.parse.unquote_plus(m.group("key"))):
            end = text.find("&", m.end())
            out += [text[done:m.end()], MASK]
            done = len(text) if end < 0 else end
    return "".join(out) + text[done:]
