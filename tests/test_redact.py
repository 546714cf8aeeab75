"""``bench.redact.mask_url``: no password of a storage URL survives, however the URL is mistyped."""
from __future__ import annotations

import urllib.parse

import pytest
import sqlalchemy.exc
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from bench.redact import MASK, mask_url

# (URL or message, the password pieces that must not survive, text that must survive)
CASES = [
    ("postgresql://bench:s3cret@db.local:5432/optuna", ["s3cret"], "postgresql://bench:***@db.local:5432/optuna"),
    ("postgresql:/user:secretpw@127.0.0.1:1/db", ["secretpw"], "postgresql:/user:***@127.0.0.1:1/db"),
    ("postgresql//user:secretpw@127.0.0.1:1/db", ["secretpw"], "postgresql//user:***@127.0.0.1:1/db"),
    ("user:secretpw@127.0.0.1:1/db", ["secretpw"], "user:***@127.0.0.1:1/db"),
    ("postgresql://user:sec retpw@127.0.0.1:1/db", ["sec", "retpw"], "postgresql://user:***@127.0.0.1:1/db"),
    ("postgresql://u:sec@ret/pw@127.0.0.1:1/db", ["sec", "ret/pw"], "postgresql://u:***@127.0.0.1:1/db"),
    ("postgresql://u: secretpw@h/db", ["secretpw"], "postgresql://u:***@h/db"),
    ("postgresql://us er:secretpw@h/db", ["secretpw"], "@h/db"),
    ("postgresql://u@127.0.0.1:1/db?password=secretpw", ["secretpw"], "postgresql://u@127.0.0.1:1/db?password=***"),
    ("postgresql://u@h/db?password=sec retpw", ["sec", "retpw"], "postgresql://u@h/db?password=***"),
    ("postgresql://u@h/db?sslmode=disable&sslpassword=secretpw", ["secretpw"], "?sslmode=disable&sslpassword=***"),
    ("mysql://u@127.0.0.1:1/db?passwd=secretpw;charset=utf8", ["secretpw"], "mysql://u@127.0.0.1:1/db?passwd=***"),
    ("postgresql://u@127.0.0.1:1/db?PASS%57ORD=secretpw", ["secretpw"], "?PASS%57ORD=***"),
    ("host=h password=sec retpw dbname=x", ["sec", "retpw"], "host=h password=***"),
    ("ArgumentError: Could not parse SQLAlchemy URL from string 'user:secretpw@127.0.0.1:1/db'", ["secretpw"],
     "ArgumentError: Could not parse SQLAlchemy URL from string 'user:***@127.0.0.1:1/db'"),
]


@pytest.mark.parametrize(("text", "secrets", "kept"), CASES, ids=[c[0][:50] for c in CASES])
def test_known_urls_are_masked(text: str, secrets: list[str], kept: str) -> None:
    masked = mask_url(text)
    assert not [s for s in secrets if s in masked], masked
    assert kept in masked


@pytest.mark.parametrize("url", [
    "sqlite:////tmp/run/tuning/tune-unet.db", "journal:///tmp/studies.log", "sqlite:////home/me@work/x.db",
    "postgresql://u@db.example:5432/bench?sslmode=require&application_name=salt",
    "--storage postgresql://u@h:5432/db: cannot open (OperationalError: connection to server at \"h\" failed)",
])
def test_text_without_a_password_is_left_as_it_is(url: str) -> None:
    assert mask_url(url) == url


# ---------------------------------------------------------------------------------- fuzzed

_PIECE = st.text("abcdefghXYZ0123456789", min_size=3, max_size=6).map(lambda s: f"Q{s}Q")  # never in the frame
_SEPARATOR = st.sampled_from([" ", "@", "/", ":", "?", "#", "%40", "'", "&", ";", "=", "\t", "//", " @ "])
_LEAD = st.sampled_from(["postgresql://", "postgresql:/", "postgresql//", "", "mysql+pymysql://", "postgresql:///",
                         "//", "sqlite:////", "postgresql:"])
_USER = st.text("abcdef_.-+%", max_size=6)
_TAIL = st.sampled_from(["127.0.0.1:1/db", "db.local:5432/optuna?sslmode=disable", "h", "", "h/db?x=1&y=2"])
_FRAME = st.sampled_from(["{}", "--storage {}: cannot open", "ArgumentError: Could not parse SQLAlchemy URL from string '{}'",
                          "study s (unet) in {}: 3 trials so far", "({})"])


@st.composite
def _password(draw: st.DrawFn, separator: st.SearchStrategy[str] = _SEPARATOR) -> tuple[str, list[str]]:
    pieces = draw(st.lists(_PIECE, min_size=1, max_size=4, unique=True))
    seps = draw(st.lists(separator, min_size=len(pieces) - 1, max_size=len(pieces) - 1))
    text = pieces[0] + "".join(s + p for s, p in zip(seps, pieces[1:]))
    return text, pieces


@settings(max_examples=400, deadline=None)
@given(lead=_LEAD, user=_USER, password=_password(), tail=_TAIL, frame=_FRAME)
@example(lead="postgresql://", user="user", password=("sec retpw", ["sec", "retpw"]), tail="127.0.0.1:1/db", frame="{}")
def test_no_piece_of_a_userinfo_password_survives(lead: str, user: str, password: tuple[str, list[str]], tail: str,
                                                  frame: str) -> None:
    text, pieces = password
    masked = mask_url(frame.format(f"{lead}{user}:{text}@{tail}"))
    assert not [p for p in pieces if p in masked], masked


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["password", "sslpassword", "passwd", "pwd", "PASS%57ORD", "token", "client_secret"]),
       password=_password(_SEPARATOR.filter(lambda s: "&" not in s)),
       before=st.sampled_from(["?", "?sslmode=disable&", "?a=1;", " ", "host=h "]),
       after=st.sampled_from(["", "&sslmode=disable", "\nnext line"]), frame=_FRAME)
def test_no_piece_of_a_parameter_password_survives(key: str, password: tuple[str, list[str]], before: str, after: str,
                                                   frame: str) -> None:
    text, pieces = password  # no '&' in it: a parser ends the value there, and the rest is another parameter
    masked = mask_url(frame.format(f"postgresql://u@h/db{before}{key}={text}{after}"))
    assert not [p for p in pieces if p in masked], masked


def _parsed_passwords(text: str) -> list[str]:
    """Every password urllib or SQLAlchemy reads in ``text`` (userinfo, or a secret query parameter)."""
    found = []
    try:
        parts = urllib.parse.urlsplit(text)
        found += [parts.password] if parts.password else []
        found += [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if "pass" in k.lower()]
    except ValueError:
        pass
    try:
        url = make_url(text)
        found += [url.password] if url.password else []
        found += [v for k, v in url.query.items() if "pass" in k.lower() and isinstance(v, str)]
    except (sqlalchemy.exc.ArgumentError, ValueError):
        pass
    return found


_FRAGMENTS = st.lists(st.sampled_from(["p", "u", "q3", "postgresql", ":", "/", "//", "://", "@", "%40", " ", "\t", "\n", "?",
                                       "#", "'", "&", "password="]), max_size=14).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_FRAGMENTS)
@example("x://a@b: pw@h")
@example("x://u\n:pw@h")
@example("x:/\n/u:pw@h")
def test_what_a_parser_reads_as_a_password_is_masked(text: str) -> None:
    """Whatever urllib or SQLAlchemy reads as a password in the masked text is the mask, whatever the input."""
    assert set(_parsed_passwords(mask_url(text))) <= {MASK}
