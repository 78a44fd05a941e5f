"""The `engines.ollama` section of config.yaml, and how Ollama's own environment variables override it.

`OLLAMA_HOST` is read the way the `ollama` program reads it (its `envconfig`): `host`, `host:port` or
`scheme://host:port[/path]`; without a port the default is 11434, or 80/443 when `http://`/`https://` is written.
A server bound to every interface (`0.0.0.0`, `::`, empty host) is reached at 127.0.0.1.

User information in the address (`https://user:password@ollama-proxy:443`, for a server behind a proxy that asks
for basic authentication) is never part of `url`, which is shown and recorded: it is kept apart and sent as basic
authentication by the plugin's clients, and kept out of every message (through the core's `redact`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple

from jarvis_core.api import ConfigError, bounded

DEFAULT_PORT = 11434
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}
_GO_DURATION = re.compile(r"^-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$|^-?0$")


class HostAddress(NamedTuple):
    scheme: str
    host: str
    """As written (an IPv6 address without brackets)."""
    port: int
    path: str
    userinfo: str | None = None
    """`user:password` written before the host, never part of `url` (sent as basic authentication)."""

    @property
    def connect_host(self) -> str:
        """Where a client connects: an all-interfaces bind address is reached through 127.0.0.1."""
        return "127.0.0.1" if self.host in _ANY_ADDRESS else self.host

    @property
    def url(self) -> str:
        host = self.connect_host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}{'/' + self.path if self.path else ''}"

    @property
    def bind(self) -> str:
        """The value `ollama serve` gets as OLLAMA_HOST to listen here."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def split_userinfo(value: str) -> tuple[str, str | None]:
    """An address without its user information (`user:password@`), and that information (None when absent)."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return text, None
    userinfo, _, host = authority.rpartition("@")
    return f"{scheme}{sep}{host}{slash}{path}", userinfo


def parse_host(value: str) -> HostAddress:
    """Parse an OLLAMA_HOST-style address; raises ValueError with the expected forms (never quoting user
    information: it is shown as `***@`)."""
    bare, userinfo = split_userinfo(value)
    if userinfo is not None:
        scheme_part, sep, rest = bare.partition("://")
        value = f"{scheme_part}{sep}***@{rest}" if sep else f"***@{bare}"
    text = bare.strip()
    scheme, sep, hostport = text.partition("://")
    default_port = DEFAULT_PORT
    if not sep:
        scheme, hostport = "http", text
    else:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"'{value}' has scheme '{scheme}'; expected http or https")
        default_port = 80 if scheme == "http" else 443
    hostport, _, path = hostport.partition("/")
    host, port_text = hostport, ""
    if hostport.startswith("["):  # [::1]:11434 or [::1]
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"'{value}' has an unclosed '[' in its address")
        host, rest = hostport[1:end], hostport[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"'{value}' is not host, host:port or scheme://host:port")
            port_text = rest[1:]
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    # more than one ':' without brackets: a bare IPv6 address, no port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"'{value}' has port '{port_text}'; expected a number from 1 to 65535")
        port = int(port_text)
    else:
        port = default_port
    if host and not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ValueError(f"'{value}' has host '{host}', which is not a host name or IP address")
    return HostAddress(scheme, host or "", port, path.strip("/"), userinfo or None)


def normalize_keep_alive(value: int | str) -> int | str:
    """Ollama takes seconds as a number, or a Go duration string; a string of digits is sent as a number."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return value


@dataclass
class OllamaSettings:
    """Settings of the Ollama engine (`engines.ollama` in config.yaml)."""

    url: str = DEFAULT_URL
    """Address of the Ollama server. `OLLAMA_HOST` in the environment wins, in any form `ollama` accepts."""
    executable: str = "ollama"
    """The `ollama` program: a name looked up on PATH (then in the installer's default places) or a full path."""
    models_dir: Path | None = None
    """Where models live on disk, read when the server is down. `OLLAMA_MODELS` wins; unset means the platform
    defaults (`~/.ollama/models`, the Linux service's `/usr/share/ollama/.ollama/models`, Windows
    `%USERPROFILE%\\.ollama\\models`). Also handed to a server Jarvis starts."""
    keep_alive: int | str = "5m"
    """How long Ollama keeps a model loaded after a test request: a Go duration ("5m", "1h") or seconds.
    `jarvis loadout up` pins models instead (keep_alive -1)."""
    stop_foreign_server: bool = False
    """When true, `stop` also ends an Ollama server Jarvis did not start (and on Windows the tray app that would
    restart it). Off by default: Jarvis never kills what it did not start."""
    num_ctx: int | None = None
    """Context size (tokens) for every request (and the warmup's load); None leaves Ollama's default."""
    num_parallel: int | None = None
    """Requests a server Jarvis starts serves at once per loaded model (`OLLAMA_NUM_PARALLEL` in its environment; it
    wins over an OLLAMA_NUM_PARALLEL Jarvis itself runs with). None leaves the server's environment as it is. It cannot
    change a server that is already running."""
    start_timeout: float | None = bounded(60.0, above=0, high=604_800,
                                          expected="seconds above 0, at most 604800 (a week), or null")
    """Seconds `ollama serve` may take to answer: it binds in seconds (loading a model is warmup's, under
    timeouts.start), so a hung one must not hold a campaign for the global `timeouts.start`; None uses that."""
    serve_host: str = field(default="", init=False, repr=False)
    """Derived: the OLLAMA_HOST value a server Jarvis starts listens on."""
    credentials: str | None = field(default=None, init=False, repr=False, compare=False)
    """Derived: `user:password` from the address, sent as basic authentication; never shown."""

    def __post_init__(self) -> None:
        try:
            address = parse_host(self.url)
        except ValueError as exc:
            raise ValueError(f"url {exc}") from None
        self.url = address.url
        self.serve_host = address.bind
        self._authorize(address)
        if isinstance(self.keep_alive, str) and not _GO_DURATION.match(self.keep_alive.strip()) \
                and not re.fullmatch(r"-?\d+", self.keep_alive.strip()):
            raise ValueError(f"keep_alive '{self.keep_alive}' is neither seconds nor a duration such as '5m' "
                             f"or '1h30m'")
        self.keep_alive = normalize_keep_alive(self.keep_alive)
        if self.num_ctx is not None and self.num_ctx <= 0:
            raise ValueError(f"num_ctx must be a positive number of tokens, found {self.num_ctx}")
        if self.num_parallel is not None and self.num_parallel < 1:
            raise ValueError(f"num_parallel must be a positive number of requests, found {self.num_parallel}")
        if not self.executable.strip():
            raise ValueError("executable is empty; write 'ollama' or the full path of the program")

    @property
    def address(self) -> HostAddress:
        return parse_host(self.url)

    def _authorize(self, address: HostAddress) -> None:
        """Keep the address's user information apart from `url`, and have the plugin's clients of `url` send it."""
        from .client import authorize

        self.credentials = address.userinfo
        authorize(address.url, address.userinfo)

    def secrets(self) -> list[str]:
        """What must never appear in any text the plugin produces: the address's user information (and password)."""
        if not self.credentials:
            return []
        from urllib.parse import unquote

        password = self.credentials.partition(":")[2]
        return [s for s in (self.credentials, password, unquote(password)) if s]

    def apply_environment(self, environ: Mapping[str, str]) -> OllamaSettings:
        """`OLLAMA_HOST` and `OLLAMA_MODELS` win over config.yaml, as they do for the `ollama` program itself."""
        changed = dataclasses.replace(self)
        changed.credentials = self.credentials  # not an init field: replace() leaves it out
        host = environ.get("OLLAMA_HOST", "").strip()
        if host:
            try:
                address = parse_host(host)
            except ValueError as exc:
                raise ConfigError(f"OLLAMA_HOST {exc}; expected host, host:port or scheme://host:port, for "
                                  f"example 127.0.0.1:11434", source="environment") from None
            changed.url = address.url
            changed.serve_host = address.bind
            changed._authorize(address)
        models = environ.get("OLLAMA_MODELS", "").strip()
        if models:
            changed.models_dir = Path(models).expanduser()
        return changed
