"""Keeping credentials out of everything the package writes or prints.

A token can reach the job through storage options (fsspec's `FSSPEC_GS_TOKEN`, a key file in
GOOGLE_APPLICATION_CREDENTIALS), the environment, a URL with a password in it, or a value pasted
into the wrong config key; a library may then quote it in an exception (gcsfs's token check puts
the token in the URL it fails to reach). Every config, metrics file, log record, error line and
printed job spec passes through `redact` or `redact_text` on its way out, so none of these carry
it. Redaction is by name (keys, query parameters, environment variables that say token, secret,
password, ...), by form (URL passwords, bearer headers, private keys, Google tokens) and by value
(the values of this process's secret-named environment variables, wherever they turn up).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from typing import Any, Iterator, Mapping, Optional
from urllib.parse import unquote

REDACTED = "[redacted]"

# Words that make a name secret-bearing, and pairs of words that do so together ("private key",
# but not "x_key", a config field).
_WORDS = {"token", "secret", "password", "passwd", "pwd", "passphrase", "credential",
          "credentials", "apikey", "auth", "authorization", "cookie", "signature", "sig"}
_PAIRS = {("private", "key"), ("access", "key"), ("api", "key"), ("account", "key"),
          ("signing", "key"), ("encryption", "key"), ("master", "key")}
_MIN_VALUE = 8  # shorter environment values ("1", "true") are not searched for in text

_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                          re.DOTALL)
# (a password may hold `/` and `:`, which a URL parser then takes for the end of the host or a port)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s:@'\"]+)"
                           r"(?::(?P<password>[^\s@'\"]*))?@")
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_GOOGLE_TOKENS = re.compile(r"\bya29\.[A-Za-z0-9_.-]+"  # OAuth access tokens
                            r"|\bAIza[A-Za-z0-9_-]{35}"  # API keys
                            r"|\b1//0[A-Za-z0-9_-]{20,}")  # refresh tokens
# name=value, name: value, "name": "value", 'name': 'value' (the name is checked by `secret_name`)
# (a `scheme://` is not a pair; a value ends where a URL's next query parameter starts, and
# before a `[redacted]` that an earlier step left)
_PAIR = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>['\"]?\s*(?:=|:(?!//))\s*['\"]?)"
                   r"(?P<value>\[redacted\]|(?:[^\s'\"&?#,;)}\]\[]|\[(?!redacted\]))+)")


def secret_name(name: object) -> bool:
    """Whether a key, query parameter or environment variable named so holds a credential."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    parts = [w for w in re.split(r"[^a-z0-9]+", words) if w]
    if parts == ["key"]:  # Google's `?key=` API keys
        return True
    return any(w in _WORDS for w in parts) or any(p in _PAIRS for p in zip(parts, parts[1:]))


def _secret_value(value: object) -> bool:
    """Credentials are non-empty strings (or mappings of them); `token_dim: 64` is not one."""
    return isinstance(value, Mapping) or (isinstance(value, str) and value not in ("", "anon"))


def redact(value: Any) -> Any:
    """A copy of a config, storage options or metrics structure with every credential replaced."""
    if isinstance(value, Mapping):
        return {k: REDACTED if secret_name(k) and _secret_value(v) else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def find(value: Any, where: str = "") -> list[str]:
    """The dotted keys of `value` that hold a credential (what `redact` would change)."""
    if isinstance(value, Mapping):
        found = []
        for k, v in value.items():
            key = f"{where}.{k}" if where else str(k)
            found += [key] if secret_name(k) and _secret_value(v) else find(v, key)
        return found
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in find(v, f"{where}[{i}]")]
    return [where or "value"] if isinstance(value, str) and redact_text(value) != value else []


def _walk_secrets(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if secret_name(k) and isinstance(v, str):
                yield v
            else:
                yield from _walk_secrets(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_secrets(v)


def environment_secrets(env: Optional[Mapping[str, str]] = None) -> list[str]:
    """Values of secret-named environment variables (and of secret keys in JSON-valued ones,
    such as fsspec's `FSSPEC_GS='{"token": ...}'`), longest first. A path to an existing file
    (GOOGLE_APPLICATION_CREDENTIALS) is not itself a secret and stays readable."""
    env = os.environ if env is None else env
    found = set()
    for name, value in env.items():
        if secret_name(name):
            found.add(value)
        elif value.lstrip().startswith("{"):
            try:
                found.update(_walk_secrets(json.loads(value)))
            except ValueError:
                pass
    return sorted((v for v in found if len(v) >= _MIN_VALUE and not os.path.exists(v)),
                  key=len, reverse=True)


def _pair(match: re.Match) -> str:
    if match["value"] == REDACTED:
        return match[0]
    if not secret_name(match["name"]):  # `run: /x/run-password=v`: a pair may hold another one
        return f"{match['name']}{match['sep']}{_PAIR.sub(_pair, match['value'])}"
    return f"{match['name']}{match['sep']}{REDACTED}"


def _userinfo(match: re.Match) -> str:
    if match["password"] is None:  # `https://TOKEN@host`: the user part is the credential
        return f"{match['scheme']}{REDACTED}@"
    return f"{match['scheme']}{match['user']}:{REDACTED}@"


# URL passwords this process has handed to a storage library, and their pieces: a library that
# cannot parse such a URL quotes a piece alone (`https://u:ab/cd@h` has the "port" `ab`).
_seen_passwords: set[str] = set()
_MIN_PIECE = 4  # shorter pieces of a password are not searched for in text


def remember_url(url: str) -> None:
    """Note the password of a URL about to be used, so that `redact_text` also removes it, and
    its pieces, from what a library later says about it without the URL around it."""
    for match in _URL_USERINFO.finditer(url):
        password = match["password"] if match["password"] is not None else match["user"]
        for form in {password, unquote(password)}:
            _seen_passwords.update(p for p in [form, *re.split(r"[/:?#@%]", form)]
                                   if len(p) >= _MIN_PIECE)


def redact_text(text: str) -> str:
    """`text` with every credential it shows replaced by `[redacted]`."""
    text = _URL_USERINFO.sub(_userinfo, text)
    for value in [*environment_secrets(), *sorted(_seen_passwords, key=len, reverse=True)]:
        text = text.replace(value, REDACTED)
    text = _PRIVATE_KEY.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {REDACTED}", text)
    text = _GOOGLE_TOKENS.sub(REDACTED, text)
    return _PAIR.sub(_pair, text)


class Redacting(logging.Filter):
    """Credentials out of every log record: its message, its traceback, its structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if isinstance(getattr(record, "json_fields", None), Mapping):
            record.json_fields = redact(record.json_fields)
        return True


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    stream = file if file is not None else sys.stderr
    if stream is not None:
        stream.write(redact_text(warnings.formatwarning(message, category, filename, lineno,
                                                        line)))


def print_exception(kind, exc, tb) -> None:
    """A traceback on stderr, in full but with credentials redacted."""
    sys.stderr.write(redact_text("".join(traceback.format_exception(kind, exc, tb))))
    sys.stderr.flush()


def install_excepthook() -> None:
    """A traceback (a bug, not bad input) still prints in full, but with credentials redacted:
    a library's exception may quote the token it failed to use. That holds for the main thread,
    for any other thread, for the "Exception ignored in" notes of finalizers, and for what
    reaches stderr without a handler of the tool's own: warnings, and the records of a library's
    logger that has none (logging's last resort)."""
    hook = print_exception
    warnings.showwarning = _show_warning
    if logging.lastResort is not None and not any(
            isinstance(f, Redacting) for f in logging.lastResort.filters):
        logging.lastResort.addFilter(Redacting())

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        sys.stderr.write(redact_text(f"Exception in thread {name}:\n"))
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    def unraisable_hook(args) -> None:
        where = f"{args.err_msg or 'Exception ignored in'}: {args.object!r}\n"
        sys.stderr.write(redact_text(where))
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
