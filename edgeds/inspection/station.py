"""The station settings and ground truth of one inspection run outside the agent.

:func:`station_for_run` starts from a default station, or one of the target's ``inspection:``
stations, points it at a source and applies the caller's overrides; :func:`load_truth` reads the
per-frame ground truth (the card's validation split or a labels ``.npy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from ..config import InspectionStation, Target, override_error
from ..errors import ConfigError
from ..modelcard import ModelCard

DEFAULT_STATION = "station-1"


def station_for_run(
    target: Target,
    source: str,
    *,
    station: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    uncertain_below: float | None = None,
    alarm: int | None = None,
) -> InspectionStation:
    """A station reading ``source``: the target's station named ``station``, else a default one.

    ``thresholds`` (class -> probability) are merged over the station's; ``uncertain_below`` and
    ``alarm`` (consecutive rejects that raise the line alarm) replace the station's when given.
    Raises :class:`~edgeds.errors.ConfigError` when the target has no such station or an override
    is out of range.
    """
    config = InspectionStation(name=DEFAULT_STATION, source=source)
    if station is not None:
        found = next((s for s in target.inspection if s.name == station), None)
        if found is None:
            known = [s.name for s in target.inspection]
            raise ConfigError.single(
                None, None, "--station", f"target {target.name!r} has no station {station!r} {known}"
            )
        config = found.model_copy(update={"source": source})
    updates: dict[str, Any] = {}
    if thresholds:
        updates["thresholds"] = {**config.thresholds, **thresholds}
    if uncertain_below is not None:
        updates["uncertain_below"] = uncertain_below
    if alarm is not None:
        updates["alarm_consecutive_rejects"] = alarm
    if updates:
        try:
            config = InspectionStation.model_validate({**config.model_dump(), **updates})
        except ValidationError as exc:
            raise override_error(exc, "station") from exc
    return config


def load_truth(truth: str | None, card: ModelCard) -> np.ndarray | None:
    """Ground-truth class indices per frame (int64), or None without ``truth``.

    ``truth`` is ``validation`` (the labels of the card's validation split, in the order the
    split's images are read) or the path of a ``.npy`` of class indices (flattened). Raises
    :class:`~edgeds.errors.ConfigError` when the file cannot be read as labels.
    """
    if truth is None:
        return None
    if truth == "validation":
        from ..datasets import load_split

        labels: np.ndarray = load_split(card, "validation")[1]
        return labels
    try:
        return np.asarray(np.load(truth, allow_pickle=False), dtype=np.int64).reshape(-1)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError.single(None, None, "--truth", f"cannot read labels from {truth}: {exc}") from exc
