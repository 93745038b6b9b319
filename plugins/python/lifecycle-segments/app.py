"""Python twin of plugins/examples/lifecycle-segments (world `segmentation`).

Returns the same tags, in the same order, as the Rust plugin for the same customer, clock
and config:

| tag          | when (defaults; every threshold is a config key)                              |
|--------------|-------------------------------------------------------------------------------|
| `new`        | created less than 30 days before now on the business clock (`new_days`)       |
| `power_user` | >= 5 payments in the last 30 days (`power_user_payments_30d`), or >= 2 active |
|              | subscriptions (`power_user_subscriptions`)                                    |
| `at_risk`    | a subscription past due, or >= 2 failed payments in the last 30 days          |
|              | (`at_risk_failed_payments_30d`), or paid before but not in the last 60 days   |
|              | (`at_risk_inactive_days`)                                                     |
| `high_value` | lifetime value above 5,000 major units of its own currency (`high_value_major`) |
| `enterprise` | attribute `plan` = `enterprise` (`enterprise_plan`, any case), or attribute   |
|              | `seats` >= 100 (`enterprise_seats`)                                           |

Simplification (as in Rust): `high_value` compares against 5,000 major units of the lifetime
value's own currency (500000 minor units for USD, 5000 for JPY); there are no exchange rates.

Build: componentize-py -d ../../../wit -w segmentation componentize app -o lifecycle-segments-py.wasm

How componentize-py maps the WIT: records are dataclasses with snake_case fields, `s64` and
`u32` are `int`, `option<T>` is `T` or `None`, and an `err` result is raised as
`componentize_py_types.Err(value)`.
"""

import json
import re
from typing import Callable, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clock, config, types

MICROS_PER_DAY = 86_400 * 1_000_000
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1

# ISO 4217 minor-unit exponents that differ from 2 (mirrors hephaestus_plugin_sdk::money).
_EXPONENT = {
    **{c: 0 for c in "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()},
    **{c: 3 for c in "BHD IQD JOD KWD LYD OMR TND".split()},
    "CLF": 4,
    "UYW": 4,
}

_UNSIGNED = re.compile(r"\+?[0-9]+")
_SIGNED = re.compile(r"[+-]?[0-9]+")


def currency_exponent(currency: str) -> int:
    return _EXPONENT.get(currency, 2)


def _saturate(value: int) -> int:
    return max(I64_MIN, min(I64_MAX, value))


def _parse_int(key: str, value: Optional[str], default: int, lo: int, hi: int) -> int:
    """A whole number like Rust's `str::parse` after trim: optional sign, digits only."""
    if value is None:
        return default
    text = value.strip()
    pattern = _SIGNED if lo < 0 else _UNSIGNED
    if pattern.fullmatch(text) and lo <= int(text) <= hi:
        return int(text)
    kind = "whole number" if lo < 0 else "whole number (0 or more)"
    raise Err(f"config `{key}` = {json.dumps(value, ensure_ascii=False)} is not a valid {kind}")


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


class Settings:
    """Thresholds, from the manifest's `[config]` table."""

    def __init__(self, lookup: Callable[[str], Optional[str]]):
        def signed(key: str, default: int) -> int:
            return _parse_int(key, lookup(key), default, I64_MIN, I64_MAX)

        def unsigned(key: str, default: int, hi: int = U32_MAX) -> int:
            return _parse_int(key, lookup(key), default, 0, hi)

        self.new_days = signed("new_days", 30)
        self.power_user_payments_30d = unsigned("power_user_payments_30d", 5)
        self.power_user_subscriptions = unsigned("power_user_subscriptions", 2)
        self.at_risk_failed_payments_30d = unsigned("at_risk_failed_payments_30d", 2)
        self.at_risk_inactive_days = signed("at_risk_inactive_days", 60)
        self.high_value_major = signed("high_value_major", 5000)
        plan = lookup("enterprise_plan")
        self.enterprise_plan = "enterprise" if plan is None else plan
        self.enterprise_seats = unsigned("enterprise_seats", 100, U64_MAX)


def _within_days(at: int, now: int, days: int) -> bool:
    """`now - at < days` whole days (a timestamp in the future counts as within)."""
    return _saturate(now - at) < _saturate(days * MICROS_PER_DAY)


def _attribute(attributes: List[types.Attribute], key: str) -> Optional[str]:
    return next((a.value for a in attributes if a.key == key), None)


def segments(customer: types.CustomerProfile, now: int, s: Settings) -> List[str]:
    activity = customer.activity
    out: List[str] = []

    if _within_days(customer.created_at, now, s.new_days):
        out.append("new")

    if (
        activity.payments_last_30_days >= s.power_user_payments_30d
        or activity.active_subscriptions >= s.power_user_subscriptions
    ):
        out.append("power_user")

    paid_before = activity.payments > 0 or activity.last_payment_at is not None
    paid_recently = activity.last_payment_at is not None and _within_days(
        activity.last_payment_at, now, s.at_risk_inactive_days
    )
    if (
        activity.has_past_due
        or activity.failed_payments_last_30_days >= s.at_risk_failed_payments_30d
        or (paid_before and not paid_recently)
    ):
        out.append("at_risk")

    ltv = customer.lifetime_value
    threshold = _saturate(s.high_value_major * 10 ** currency_exponent(ltv.currency))
    if ltv.amount_minor > threshold:
        out.append("high_value")

    plan = _attribute(customer.attributes, "plan")
    plan_matches = plan is not None and _ascii_lower(plan.strip()) == _ascii_lower(s.enterprise_plan.strip())
    seats_text = _attribute(customer.attributes, "seats")
    seats = None
    if seats_text is not None and _UNSIGNED.fullmatch(seats_text.strip()) and int(seats_text.strip()) <= U64_MAX:
        seats = int(seats_text.strip())
    if plan_matches or (seats is not None and seats >= s.enterprise_seats):
        out.append("enterprise")

    return out


class Segmenter(exports.Segmenter):
    """The exported interface `hephaestus:plugins/segmenter@0.1.0`."""

    def segment(self, customer: types.CustomerProfile) -> List[str]:
        return segments(customer, clock.now(), Settings(config.get))
