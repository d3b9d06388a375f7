"""Outcome labels and the cohort's exclusion rules, one documented function each.

All times are timezone-aware. ``prediction_time`` is the admission time plus the
observation window (48 h by default); nothing recorded at or after it is an input.

Exclusions (applied before labelling, and counted by the cohort builders):

* died before the prediction time: the outcome is already known, so the admission
  cannot be a prediction sample for any task (``EXCLUDE_DIED_IN_WINDOW``);
* discharged alive before the prediction time (stay shorter than the window): the
  patient is gone when the prediction would be made (``EXCLUDE_DISCHARGED_IN_WINDOW``).

Labels:

* **in-hospital mortality**: death before (or at) hospital discharge — MIMIC's
  ``hospital_expire_flag`` or a ``deathtime`` no later than ``dischtime`` — for a
  patient alive at the prediction time;
* **long length of stay**: the hospital stay, discharge minus admission, is longer
  than 7 days (strictly);
* **30-day readmission**: another hospital admission of the same patient starting
  after this discharge and no more than 30 days after it. Only defined for patients
  discharged alive: ``None`` (masked from loss and metrics) when the patient died in
  hospital. Unknown (``None``) when the discharge time is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from moe_core.records import Labels

__all__ = [
    "EXCLUDE_DIED_IN_WINDOW",
    "EXCLUDE_DISCHARGED_IN_WINDOW",
    "LONG_LOS_DAYS",
    "READMISSION_DAYS",
    "died_in_hospital",
    "exclusion_reason",
    "label_admission",
    "long_los_label",
    "mortality_label",
    "readmission_label",
]

LONG_LOS_DAYS = 7  # paper section 3.1, task 2
READMISSION_DAYS = 30  # paper section 3.1, task 3
EXCLUDE_DIED_IN_WINDOW = "died before prediction time"
EXCLUDE_DISCHARGED_IN_WINDOW = "discharged before prediction time"


def died_in_hospital(
    discharge_time: datetime | None,
    death_time: datetime | None,
    expire_flag: bool | None = None,
) -> bool:
    """Death during the stay: the expire flag, or a death time no later than discharge."""
    if expire_flag:
        return True
    if death_time is None:
        return False
    return discharge_time is None or death_time <= discharge_time


def exclusion_reason(
    prediction_time: datetime,
    discharge_time: datetime | None,
    death_time: datetime | None,
    expire_flag: bool | None = None,
) -> str | None:
    """Why an admission is not a prediction sample, or ``None`` if it is one.

    Death is checked first: a patient who died in the window is counted under
    ``EXCLUDE_DIED_IN_WINDOW`` even though their discharge time is also in it.
    """
    dead = died_in_hospital(discharge_time, death_time, expire_flag)
    end_of_life = death_time if death_time is not None else (discharge_time if dead else None)
    if dead and end_of_life is not None and end_of_life < prediction_time:
        return EXCLUDE_DIED_IN_WINDOW
    if discharge_time is not None and discharge_time < prediction_time:
        return EXCLUDE_DISCHARGED_IN_WINDOW
    return None


def mortality_label(
    prediction_time: datetime,
    discharge_time: datetime | None,
    death_time: datetime | None,
    expire_flag: bool | None = None,
) -> bool | None:
    """In-hospital death, for a patient alive at ``prediction_time``; ``None`` if not alive.

    Without any discharge or death time the outcome is unknown (``None``).
    """
    if discharge_time is None and death_time is None and expire_flag is None:
        return None
    dead = died_in_hospital(discharge_time, death_time, expire_flag)
    if dead and death_time is not None and death_time < prediction_time:
        return None
    return dead


def long_los_label(anchor_time: datetime, discharge_time: datetime | None) -> bool | None:
    """Hospital stay strictly longer than ``LONG_LOS_DAYS``; ``None`` without a discharge."""
    if discharge_time is None:
        return None
    return discharge_time - anchor_time > timedelta(days=LONG_LOS_DAYS)


def readmission_label(
    discharge_time: datetime | None,
    died: bool,
    later_admissions: Iterable[datetime],
) -> bool | None:
    """A new admission within ``READMISSION_DAYS`` of a live discharge.

    ``later_admissions`` are the admission times of the same patient's other stays;
    one counts if it starts at or after this discharge and at most 30 days later.
    ``None`` when the patient died in hospital or the discharge time is unknown.
    """
    if died or discharge_time is None:
        return None
    horizon = discharge_time + timedelta(days=READMISSION_DAYS)
    return any(discharge_time <= t <= horizon for t in later_admissions)


def label_admission(
    *,
    anchor_time: datetime,
    prediction_time: datetime,
    discharge_time: datetime | None,
    death_time: datetime | None,
    expire_flag: bool | None,
    other_admissions: Iterable[datetime],
) -> Labels:
    """All three labels of one admission (call only for admissions not excluded)."""
    died = died_in_hospital(discharge_time, death_time, expire_flag)
    return Labels(
        mortality=mortality_label(prediction_time, discharge_time, death_time, expire_flag),
        long_los=long_los_label(anchor_time, discharge_time),
        readmission=readmission_label(discharge_time, died, other_admissions),
    )
