"""A bounded memo: a dict that forgets its oldest entry, for the request path's parse caches
(parsed HTTP heads, infer routes, infer plans)."""

from __future__ import annotations

from typing import Any


def remember(memo: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """``memo[key] = value``, first forgetting the oldest entry when ``memo`` holds ``size`` (insertion
    order: a bounded memo without per-hit bookkeeping)."""
    if len(memo) >= size:
        del memo[next(iter(memo))]
    memo[key] = value


__all__ = ["remember"]
