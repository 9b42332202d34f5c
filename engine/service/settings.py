"""Service configuration: where the rules are, who may call, and the limits.

In: a keys file (YAML) and/or environment variables, plus the command line's options.
Out: a frozen `Settings`. Keys are kept only as sha256 digests, so neither a settings
object nor a log line ever holds a secret; a key file may give digests instead of keys.

Keys file (`--keys FILE` or `$TIV_KEYS_FILE`):

    keys:
      - name: insurer-a            # shown in logs and metrics; never the key
        key: "a long random secret" # or sha256: "<hex digest of the key>"
        packs: [standard, acme]     # the tenants: packs this key may value with and read
      - name: ops
        sha256: "9f86d0..."
        packs: ["*"]                # every pack
        roles: [admin, metrics]     # admin: POST /v1/admin/reload; metrics: GET /metrics

Environment (added to the file's keys): `TIV_API_KEYS="secret1=standard,acme;secret2=*"`
(name `env-1`, `env-2`, ...) and `TIV_ADMIN_KEYS="secret3;secret4"` (every pack, both roles).
With no keys at all the service is open and must listen on loopback only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ALL_PACKS = "*"
ROLES = frozenset({"admin", "metrics", "underwriter"})  # underwriter: reviews referred quotes
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SettingsError(ValueError):
    """A bad keys file, environment variable or option: one line, says what to fix."""


def digest(key: str | bytes) -> str:
    """The sha256 of a key's exact bytes (text is UTF-8): nothing is stripped or folded."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    packs: frozenset[str]  # pack ids, or {"*"}
    roles: frozenset[str] = frozenset()

    def may_use(self, pack_id: str) -> bool:
        return ALL_PACKS in self.packs or pack_id in self.packs


@dataclass(frozen=True)
class Settings:
    rules: Path
    keys: tuple[ApiKey, ...] = ()
    audit: Path | None = None  # the audit log (SQLite) valuations are recorded in
    max_body_bytes: int = 1_048_576
    max_batch: int = 1_000
    time_budget_s: float = 10.0
    # Each valuation's own budget (engine.api): one over it is a 503 (in a batch request,
    # that item's error) at its next phase, and the thread is free for the next request.
    valuation_budget_s: float = 2.0
    threads: int = 4  # valuations run at once per process (see the README on scaling)
    watch_s: float = 0.0  # poll the rule folder every N s and reload on change; 0: off
    # A request body must keep up with `body_min_rate` bytes/s after a grace of
    # `body_timeout_s`: a body of N bytes has body_timeout_s + N / body_min_rate seconds,
    # else 408 and the connection is closed (slow senders and short bodies hold no worker).
    body_timeout_s: float = 5.0
    body_min_rate: int = 10_000
    # Freeze the long-lived objects once loaded (engine.service.heap): set by `tiv serve`,
    # whose process serves and nothing else; an app built in a test or embedded leaves
    # its process's collector alone.
    freeze_heap: bool = False

    @property
    def open(self) -> bool:
        """No keys: anyone who can connect may do anything (so: loopback only)."""
        return not self.keys

    def to_json(self) -> str:
        """For handing to uvicorn worker processes through the environment."""
        data = dataclasses.asdict(self)
        data["rules"] = str(self.rules)
        data["audit"] = str(self.audit) if self.audit else None
        data["keys"] = [
            {**dataclasses.asdict(k), "packs": sorted(k.packs), "roles": sorted(k.roles)}
            for k in self.keys
        ]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["rules"] = Path(data["rules"])
        data["audit"] = Path(data["audit"]) if data.get("audit") else None
        data["keys"] = tuple(
            ApiKey(k["name"], k["sha256"], frozenset(k["packs"]), frozenset(k["roles"]))
            for k in data["keys"]
        )
        return cls(**data)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def load_keys(
    file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[ApiKey, ...]:
    """Keys from the file (if any) and the environment; raises SettingsError."""
    env = os.environ if environ is None else environ
    keys: list[ApiKey] = []
    file = file or env.get("TIV_KEYS_FILE") or None
    if file:
        keys.extend(_keys_file(Path(file)))
    keys.extend(_env_keys(env.get("TIV_API_KEYS", ""), env.get("TIV_ADMIN_KEYS", "")))
    seen: dict[str, str] = {}
    for key in keys:
        if key.sha256 in seen:
            raise SettingsError(f"keys {seen[key.sha256]!r} and {key.name!r} are the same key")
        seen[key.sha256] = key.name
    return tuple(keys)


def _keys_file(path: Path) -> Iterable[ApiKey]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"{path}: cannot read the keys file: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise SettingsError(f"{path}: expected a mapping with a `keys:` list")
    for index, entry in enumerate(data["keys"]):
        yield _key_entry(entry, f"{path}: keys[{index}]")


def _key_entry(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: expected a mapping (name, key or sha256, packs, roles)")
    unknown = set(entry) - {"name", "key", "sha256", "packs", "roles"}
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SettingsError(f"{where}: every key needs a name (shown in logs instead of the key)")
    if ("key" in entry) == ("sha256" in entry):
        raise SettingsError(f"{where} ({name}): give exactly one of `key` and `sha256`")
    if "key" in entry:
        secret = entry["key"]
        if not isinstance(secret, str) or len(secret) < 16:
            raise SettingsError(f"{where} ({name}): a key must be text of 16 characters or more")
        sha = digest(secret)
    else:
        sha = str(entry["sha256"]).lower()
        if not _HEX64.fullmatch(sha):
            raise SettingsError(f"{where} ({name}): sha256 must be 64 hex digits")
    packs = entry.get("packs")
    if not isinstance(packs, list) or not packs or not all(isinstance(p, str) for p in packs):
        raise SettingsError(f'{where} ({name}): packs must be a list of pack ids, or ["*"]')
    roles = entry.get("roles", [])
    if not isinstance(roles, list) or not set(roles) <= ROLES:
        raise SettingsError(f"{where} ({name}): roles must be a list of {', '.join(sorted(ROLES))}")
    return ApiKey(name, sha, frozenset(packs), frozenset(roles))


def _env_keys(api: str, admin: str) -> Iterable[ApiKey]:
    entries = filter(None, (part.strip() for part in api.split(";")))
    for count, item in enumerate(entries, 1):
        secret, sep, packs = item.rpartition("=")
        if not sep or not secret or not packs.strip():
            raise SettingsError(
                f"TIV_API_KEYS entry {count}: write KEY=pack1,pack2 (or KEY=*), "
                "entries separated by ;"
            )
        if len(secret) < 16:
            raise SettingsError(f"TIV_API_KEYS entry {count}: a key must be 16 characters or more")
        wanted = frozenset(p.strip() for p in packs.split(",") if p.strip())
        yield ApiKey(f"env-{count}", digest(secret), wanted)
    for index, secret in enumerate(filter(None, (s.strip() for s in admin.split(";"))), 1):
        if len(secret) < 16:
            raise SettingsError(
                f"TIV_ADMIN_KEYS entry {index}: a key must be 16 characters or more"
            )
        yield ApiKey(f"admin-{index}", digest(secret), frozenset({ALL_PACKS}), ROLES)


def check(settings: Settings) -> Settings:
    """Refuse limits that make no sense, with the option to fix."""
    problems = []
    if settings.max_body_bytes < 1024:
        problems.append("--max-body must be at least 1024 bytes")
    if settings.max_batch < 1:
        problems.append("--max-batch must be at least 1")
    if not settings.time_budget_s > 0:
        problems.append("--time-budget must be more than 0 seconds")
    if not settings.valuation_budget_s > 0:
        problems.append("--valuation-budget must be more than 0 seconds")
    if settings.threads < 1:
        problems.append("--threads must be at least 1")
    if not settings.body_timeout_s > 0:
        problems.append("--body-timeout must be more than 0 seconds")
    if settings.body_min_rate < 1:
        problems.append("--body-min-rate must be at least 1 byte per second")
    if settings.watch_s < 0:
        problems.append("--watch must be 0 (off) or a number of seconds")
    if problems:
        raise SettingsError("; ".join(problems))
    return settings
