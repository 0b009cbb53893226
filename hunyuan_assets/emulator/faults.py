"""Fault injection and account settings for the emulator: what to break, how often, for which
inputs; how long predictions are kept; what the account has and pays.

The configuration is the JSON body of `POST /_emulator/faults` (also `EmulatorServer.configure`):
scalar settings replace the current ones, `rules` are appended, `fail_tasks` / `nsfw` replace the
previous selector (`null` clears it). Not thread-safe on its own: the server holds its lock.

A rule with a `probability` below 1 fires on that fraction of the requests it matches, drawn
from the emulator's seeded generator: a run that sends the same requests in the same order
sees the same faults (concurrent requests interleave differently from run to run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ENDPOINTS = frozenset(
    {"submit", "result", "list", "balance", "upload", "upload_put", "media", "output", "any"}
)
ERROR_KINDS = frozenset({"429", "500", "502", "503", "504"})
# drop: closed before any answer (never processed); drop_after_accept: processed, then closed
# without an answer (after `delay`, 0 unless given); slow: answered after `delay` (1 s unless
# given); truncate: a successful answer sent with its full Content-Length but half its body,
# then closed (an error answer is sent whole).
KINDS = ERROR_KINDS | {"drop", "drop_after_accept", "slow", "truncate"}
ALWAYS = -1
RETENTION_SECONDS = 7 * 24 * 3600  # the provider keeps predictions and outputs 7 days
BALANCE_ROUTES = ("balance", "account/balance")  # both documented; a test may remove one
# Price of one Hunyuan3D v2.1 prediction: not published (third parties say $0.30-0.40); assumed.
DEFAULT_PRICE = 0.35


def _count(spec: Mapping[str, Any], default: int) -> int:
    count = spec.get("count", default)
    if not isinstance(count, int) or isinstance(count, bool) or count < ALWAYS:
        raise ValueError(f"count must be an integer >= -1, got {count!r}")
    return count


def _seconds(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"probability must be a number from 0 to 1, got {value!r}")
    return float(value)


def _money(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{name} must be a number (USD), got {value!r}")
    return float(value)


def _match(spec: Mapping[str, Any]) -> str | None:
    match = spec.get("match")
    if match is not None and not isinstance(match, str):
        raise ValueError(f"match must be a string, got {match!r}")
    return match


@dataclass
class FaultRule:
    """One injected fault. `remaining` counts down; -1 means for ever.

    `match` selects requests by substring: of the image URL for `submit` and `result`,
    of the request path for the other endpoints.
    """

    endpoint: str
    kind: str
    remaining: int = 1
    match: str | None = None
    retry_after: float | None = 1.0  # 429 (and 503 when given); None sends no Retry-After
    delay: float = 1.0  # slow (1 s unless given) and drop_after_accept (0 unless given)
    explicit_retry_after: bool = False  # the rule named retry_after itself
    probability: float = 1.0  # the fraction of matching requests it fires on

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> FaultRule:
        allowed = {"endpoint", "kind", "count", "match", "retry_after", "delay", "probability"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown rule field(s): {sorted(unknown)}")
        endpoint = spec.get("endpoint", "any")
        kind = str(spec.get("kind", ""))
        if endpoint not in ENDPOINTS:
            raise ValueError(f"rule endpoint must be one of {sorted(ENDPOINTS)}, got {endpoint!r}")
        if kind not in KINDS:
            raise ValueError(f"rule kind must be one of {sorted(KINDS)}, got {kind!r}")
        return cls(
            endpoint=endpoint,
            kind=kind,
            remaining=_count(spec, 1),
            match=_match(spec),
            retry_after=_seconds(spec.get("retry_after", 1.0), "retry_after", optional=True),
            delay=_seconds(spec.get("delay", 1.0 if kind == "slow" else 0.0), "delay") or 0.0,
            explicit_retry_after="retry_after" in spec,
            probability=_probability(spec.get("probability", 1.0)),
        )

    def applies_to(self, endpoint: str, subject: str) -> bool:
        return (
            self.remaining != 0
            and self.endpoint in (endpoint, "any")
            and (self.match is None or self.match in subject)
        )


@dataclass
class TaskSelector:
    """Which predictions get a task-level fault: the next `remaining` ones, or those whose
    image URL contains `match` (all of them unless a count is also given)."""

    remaining: int
    match: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, spec: Mapping[str, Any], *, with_error: bool) -> TaskSelector:
        allowed = {"count", "match"} | ({"error"} if with_error else set())
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown field(s): {sorted(unknown)}")
        match = _match(spec)
        error = spec.get("error")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"error must be a string, got {error!r}")
        return cls(remaining=_count(spec, ALWAYS if match else 1), match=match, error=error)

    def take(self, image_url: str) -> bool:
        """True (and one use consumed) when this prediction is selected."""
        if self.remaining == 0 or (self.match is not None and self.match not in image_url):
            return False
        if self.remaining > 0:
            self.remaining -= 1
        return True


@dataclass
class FaultConfig:
    latency: float = 2.0
    jitter: float = 0.0
    output_ttl: float | None = None  # seconds an output URL stays valid after completion
    hold: bool = False  # keep predictions `processing` until released
    rules: list[FaultRule] = field(default_factory=list)
    fail_tasks: TaskSelector | None = None
    nsfw: TaskSelector | None = None
    # completed predictions whose GLB is broken: `error` selects how ("garbage": not a GLB,
    # "truncated": the GLB cut short, "untextured": a valid GLB without any material), so
    # mesh checks can be seen failing.
    corrupt_output: TaskSelector | None = None
    retention: float = RETENTION_SECONDS  # older predictions are gone: not listed, not found
    balance: float = 100.0  # the account's credit (USD) before this emulator's predictions
    price: float = DEFAULT_PRICE  # charged when a prediction completes (failed ones are free)
    balance_routes: list[str] = field(default_factory=lambda: list(BALANCE_ROUTES))

    def merge(self, body: Mapping[str, Any]) -> None:
        """Validate all of `body` first, then apply it, so a bad request changes nothing."""
        if not isinstance(body, Mapping):
            raise ValueError("faults body must be a JSON object")
        unknown = set(body) - {
            "latency",
            "jitter",
            "output_ttl",
            "hold",
            "rules",
            "fail_tasks",
            "nsfw",
            "corrupt_output",
            "retention",
            "balance",
            "price",
            "balance_routes",
        }
        if unknown:
            raise ValueError(f"unknown fault setting(s): {sorted(unknown)}")
        updates: dict[str, Any] = {}
        for name in ("latency", "jitter"):
            if name in body:
                updates[name] = _seconds(body[name], name)
        if "output_ttl" in body:
            updates["output_ttl"] = _seconds(body["output_ttl"], "output_ttl", optional=True)
        if "retention" in body:
            updates["retention"] = _seconds(body["retention"], "retention")
        for name in ("balance", "price"):
            if name in body:
                updates[name] = _money(body[name], name)
        if "balance_routes" in body:
            routes = body["balance_routes"]
            if not isinstance(routes, list) or not set(routes) <= set(BALANCE_ROUTES):
                raise ValueError(f"balance_routes must be a list drawn from {list(BALANCE_ROUTES)}")
            updates["balance_routes"] = list(routes)
        if "hold" in body:
            if not isinstance(body["hold"], bool):
                raise ValueError(f"hold must be true or false, got {body['hold']!r}")
            updates["hold"] = body["hold"]
        rules = body.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
            raise ValueError("rules must be a list of objects")
        new_rules = [FaultRule.from_json(r) for r in rules]
        for name in ("fail_tasks", "nsfw", "corrupt_output"):
            if name in body:
                spec = body[name]
                if spec is not None and not isinstance(spec, Mapping):
                    raise ValueError(f"{name} must be an object or null")
                updates[name] = (
                    None
                    if spec is None
                    else TaskSelector.from_json(spec, with_error=name != "nsfw")
                )
        for name, value in updates.items():
            setattr(self, name, value)
        self.rules.extend(new_rules)

    def take_rule(self, endpoint: str, subject: str, rand: Callable[[], float]) -> FaultRule | None:
        """The first live rule for this request that fires, with one use consumed."""
        for rule in self.rules:
            if rule.applies_to(endpoint, subject):
                if rule.probability < 1 and rand() >= rule.probability:
                    continue  # not this time; a later rule may still apply
                if rule.remaining > 0:
                    rule.remaining -= 1
                return rule
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
