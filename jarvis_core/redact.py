"""Redaction: the one function that takes credentials out of text before it leaves Jarvis (console, results.jsonl,
the workbook, logs, error messages).

What is removed, wherever it appears in the text:

- values of secret-looking options: any `--*key*`, `--*token*`, `--*secret*`, `--*password*` option (`--api-key X`,
  `--hf-token=X`), also inside a `shlex.join`-ed command, a quoted word, or a Python/JSON list of arguments
  (`'--api-key', 'X'`). Counts and tokenizers are not secrets: `--max-num-batched-tokens`, `--tokenizer` are kept;
- secret-named assignments and fields: `HF_TOKEN=X`, `api_key='X'`, `"api_key": "X"`;
- user information in URLs: `http://user:key@host` becomes `http://***@host`;
- `Authorization:` header values and `Bearer X` credentials;
- the values of secret-named environment variables currently set (`HF_TOKEN`, `WANDB_API_KEY`, `DB_PASSWORD`: names
  holding TOKEN, KEY, SECRET or PASSWORD), and the `secrets` given, longest first, also as they look once quoted by
  shlex, JSON or a URL. Values shorter than 4 characters (and words such as `true`) cannot be told from ordinary text
  and are left alone.

Text without any of these comes back unchanged (the same object), after one quick scan: cheap enough for every line.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Iterable, Mapping

__all__ = ["MASK", "redact", "redact_argv", "is_secret_name", "environment_secrets"]

MASK = "***"
MIN_SECRET_LENGTH = 4

#: A name that holds a credential: key, secret, password, token (but not "tokens", "tokenizer" or "token_source":
#: counts, models and where a count came from).
_SECRET_NAME = re.compile(r"key|secret|passw(?:or)?d|token(?!s|iz|is|_source|_count|_len|_usage)", re.IGNORECASE)
#: Environment values that are never taken for secrets, whatever the variable's name.
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "unset", "yes", "no", "on", "off", "auto", "default"})

#: Anything that could need structural redaction; text without it skips every pattern below.
_HINT = re.compile(r"key|token(?!s|iz|is|_source|_count|_len|_usage)|secret|passw|authoriz|bearer|@", re.IGNORECASE)

#: One shell word: quoted parts, escapes and plain characters, up to unquoted whitespace.
_WORD = r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|\\.|[^\s'"\\])+"""
_SHELL_WORD = re.compile(_WORD, re.DOTALL)
#: A value in plain text: a shell word, where a quote left open is just a character.
_VALUE = r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|\\.|\S)+"""
_OPTION = re.compile(r"(--?[A-Za-z][\w.-]*)(?:=(.*))?", re.DOTALL)
_ASSIGNMENT = re.compile(r"([A-Za-z_][\w.-]*)=(.*)", re.DOTALL)

#: Ahead of a name: a secret word within its next 64 name characters (so a match never swallows a secret option as
#: the value of an ordinary one).
_SECRET_AHEAD = r"(?=[\w.-]{0,63}?(?i:key|secret|passw(?:or)?d|token(?!s|iz|is|_source|_count|_len|_usage)))"
#: `--api-key X`, `--token=X` in plain text (a quoted value is one value).
_FLAG_TEXT = re.compile(r"(?<![\w-])(--?" + _SECRET_AHEAD + r"[A-Za-z][\w.-]{0,63})(=|[ \t]+)(?!--)(" + _VALUE + ")",
                        re.DOTALL)
#: `'--api-key', 'X'` and `"--api-key", "X"`: a Python or JSON list of arguments.
_FLAG_LIST = re.compile(r"""(?<![\w-])(--?""" + _SECRET_AHEAD + r"""[A-Za-z][\w.-]{0,63})(['"]\s*,\s*(['"]))"""
                        r"""((?:\\.|(?!\3)[^\\])*)""", re.DOTALL)
#: `HF_TOKEN=X`, `api_key='X'`, `?api_key=X&...`.
_ASSIGN_TEXT = re.compile(r"(?<![\w.-])(" + _SECRET_AHEAD + r"[A-Za-z_][\w.-]{0,63})="
                          r"((?:'[^']*'|\"(?:[^\"\\]|\\.)*\"|\\.|[^\s&])+)", re.DOTALL)
#: `"api_key": "X"` and `'api_key': 'X'` (JSON, a Python dict).
_KEY_VALUE = re.compile(r"""(["'])(""" + _SECRET_AHEAD + r"""[\w.-]+)\1(\s*:\s*)(["'])((?:\\.|(?!\4)[^\\])*)\4""",
                        re.DOTALL)
#: User information in a URL, up to the last `@` before the host.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)([^\s/?#'\"<>]+)@")
#: `Authorization: Bearer X`, `authorization="Basic X"`, and a bare `Bearer X` credential.
_AUTHORIZATION = re.compile(
    r"""(?i)(authorization["']?\s*[:=]\s*["']?)((?:(?:bearer|basic|token|digest|negotiate)\s+)?)([^\s"',;]+)""")
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?=[^\s\"',;]*[0-9._~+/-])([^\s\"',;]+)")

_TRAILING = ",;)]}"


def is_secret_name(name: str) -> bool:
    """Whether an option, variable or field name (`--hf-token`, `WANDB_API_KEY`, `db_password`) holds a secret."""
    return _SECRET_NAME.search(name) is not None


def environment_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of secret-named environment variables, those long enough to tell from ordinary text."""
    if environ is not None:
        return _secret_values(environ.items())
    global _env_cache
    raw = getattr(os.environ, "_data", None)  # the encoded mapping: comparing it is far cheaper than decoding it
    if raw is None:  # pragma: no cover - an os.environ without it
        return _secret_values(os.environ.items())
    key = tuple(raw.items())
    if _env_cache is None or _env_cache[0] != key:
        _env_cache = (key, _secret_values(os.environ.items()))
    return _env_cache[1]


_env_cache: tuple[tuple[object, ...], tuple[str, ...]] | None = None


def _secret_values(items: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(sorted({value for name, value in items if _SECRET_NAME.search(name) and _usable(value)}))


def _usable(secret: str) -> bool:
    return len(secret) >= MIN_SECRET_LENGTH and secret.strip().lower() not in _NOT_SECRET_VALUES


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential replaced by `***` (see the module's docstring for what counts)."""
    if not text:
        return text
    if isinstance(secrets, str):
        secrets = (secrets,)
    literals = _literal_pattern(tuple(sorted({s for s in secrets if isinstance(s, str) and _usable(s)}))
                                + environment_secrets())
    if literals is not None:
        text = literals.sub(MASK, text)
    if _HINT.search(text) is None:
        return text
    text = _redact_shell_words(text)
    text = _FLAG_LIST.sub(_flag_list, text)
    text = _FLAG_TEXT.sub(_flag_text, text)
    text = _ASSIGN_TEXT.sub(_assignment, text)
    text = _KEY_VALUE.sub(_key_value, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _BEARER.sub(lambda m: m.group(1) + MASK if m.group(2) != MASK else m.group(0), text)


def redact_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with every string redacted on its own, and the value of a
    secret-named key (`api_key`, `hf_token`) masked whole. For data about to be serialized: redacting the serialized
    text instead can let a value's pattern run past the closing quote of a JSON string (`"--api-key X", ...`)."""
    secrets = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and _usable(v)
                    else redact_data(v, secrets)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, secrets) for v in value]
    return value


def redact_argv(argv: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """A command line with the values of secret-looking options replaced (`--api-key ***`, `--token=***`,
    `HF_TOKEN=***`), and every argument passed through `redact`."""
    secrets = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    out: list[str] = []
    value_next = False
    for arg in argv:
        arg = str(arg)
        if value_next and not arg.startswith("--"):
            out.append(MASK)
            value_next = False
            continue
        value_next = False
        option = _OPTION.fullmatch(arg)
        if option and is_secret_name(option.group(1)):
            if option.group(2) is None:
                value_next = True
                out.append(arg)
            else:
                out.append(f"{option.group(1)}={MASK}")
            continue
        assignment = _ASSIGNMENT.fullmatch(arg)
        if assignment and is_secret_name(assignment.group(1)):
            out.append(f"{assignment.group(1)}={MASK}")
            continue
        out.append(redact(arg, secrets))
    return out


# --- the passes -----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _literal_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of every secret and the forms it takes once quoted, longest first."""
    import json
    import shlex
    from urllib.parse import quote

    forms: set[str] = set()
    for secret in secrets:
        forms.update({secret, shlex.quote(secret), json.dumps(secret)[1:-1],
                      json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1], quote(secret, safe="")})
    forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
    if not forms:
        return None
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f))))


def _unquote(word: str) -> str | None:
    if not any(c in word for c in "'\"\\"):
        return word
    import shlex

    try:
        parts = shlex.split(word)
    except ValueError:
        return None
    return "".join(parts)


def _redact_shell_words(text: str) -> str:
    """Options and assignments as a shell sees them: `'--token=a b'`, `--api-key 'a b'`, `HF_TOKEN='x y'`."""
    pieces: list[str] = []
    last = 0
    value_next = False
    for match in _SHELL_WORD.finditer(text):
        word = match.group(0)
        plain = _unquote(word)
        replacement = None
        if value_next and (plain is None or not plain.startswith("--")):
            replacement = MASK + _keep_trailing(word)[1]
            value_next = False
        elif plain is not None:
            value_next = False
            option = _OPTION.fullmatch(plain)
            assignment = _ASSIGNMENT.fullmatch(plain) if option is None else None
            if option and is_secret_name(option.group(1)):
                if option.group(2) is None:
                    value_next = True
                else:
                    replacement = f"{option.group(1)}={MASK}"
            elif assignment and is_secret_name(assignment.group(1)):
                replacement = f"{assignment.group(1)}={MASK}"
        if replacement is not None and replacement != word:
            pieces.append(text[last:match.start()])
            pieces.append(replacement)
            last = match.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def _keep_trailing(value: str) -> tuple[str, str]:
    """A value and the punctuation after it that belongs to the surrounding text (`api_key='x', port=1`)."""
    stripped = value.rstrip(_TRAILING)
    if not stripped:
        return value, ""
    return stripped, value[len(stripped):]


def _flag_text(match: re.Match[str]) -> str:
    name, sep, value = match.groups()
    if not is_secret_name(name) or value == MASK:
        return match.group(0)
    _, trailing = _keep_trailing(value)
    return f"{name}{sep}{MASK}{trailing}"


def _flag_list(match: re.Match[str]) -> str:
    name, sep, _, value = match.groups()
    if not is_secret_name(name) or value == MASK or not value:
        return match.group(0)
    return f"{name}{sep}{MASK}"


def _assignment(match: re.Match[str]) -> str:
    name, value = match.groups()
    if not is_secret_name(name) or value == MASK:
        return match.group(0)
    _, trailing = _keep_trailing(value)
    return f"{name}={MASK}{trailing}"


def _key_value(match: re.Match[str]) -> str:
    quote, name, sep, vquote, value = match.groups()
    if not is_secret_name(name) or value == MASK:
        return match.group(0)
    return f"{quote}{name}{quote}{sep}{vquote}{MASK}{vquote}"
