"""Typed notifications: a backend names a kind and its facts (an appointment's id and status, a
lab test's name and whether it is abnormal, an AI analysis's type and id), and the server words it.

Each kind's fields, rules, wording and priority are here once. The Python service's typed senders
(`appointment_draft`, `lab_result_draft`, `ai_analysis_draft`), an item of `POST /v1/notifications`
that has a `kind` (`parse_item`) and the OpenAPI document (`KINDS`) all read them, so a backend in
any language sends exactly what the in-process senders send.

Minimum necessary: the wording says what happened and where to look, never clinical detail. A lab
result says it is ready and never carries values: it takes no title, message, data or priority,
and its abnormal flag only raises the priority (it is not in the payload). Where a kind's facts
say how urgent it is (an appointment's status, a lab result's flag) they set the priority; only an
AI analysis, whose facts do not, takes one from the sender.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from diagnoxix.models import Links, NotificationDraft, Priority, Wording
from diagnoxix.rules.drafts import parse_draft, validated_draft
from diagnoxix.rules.fields import FieldErrors
from diagnoxix.rules.links import LINK_FIELDS, LinkPolicy, parse_links
from diagnoxix.rules.locales import locale_problem
from diagnoxix.rules.notification import (
    MAX_MESSAGE_CHARS,
    MAX_REFERENCE_CHARS,
    TITLE_REGEX,
    priority_problem,
    text_problem,
    user_id_problem,
)

AppointmentStatus = Literal["created", "confirmed", "cancelled", "rescheduled", "reminder"]
APPOINTMENT_STATUSES: tuple[str, ...] = get_args(AppointmentStatus)

# The field that makes an item of a send typed, and names its kind.
KIND_FIELD = "kind"
# A reference (an appointment or analysis id, a test's name, an analysis type) is a short line of
# text: not blank, no NUL, as a title (`TITLE_REGEX`), and at most `MAX_REFERENCE_CHARS`.
REFERENCE_REGEX = TITLE_REGEX

# Default wording says what happened and where to look, never clinical detail.
_APPOINTMENT_TEXT: dict[str, tuple[str, str]] = {
    "created": ("Appointment Scheduled", "Your appointment has been scheduled."),
    "confirmed": ("Appointment Confirmed", "Your appointment has been confirmed."),
    "cancelled": ("Appointment Cancelled", "Your appointment has been cancelled."),
    "rescheduled": ("Appointment Rescheduled", "Your appointment has been rescheduled."),
    "reminder": ("Appointment Reminder", "You have an upcoming appointment."),
}

# What a kind's facts become: type, title, message, data and priority.
Drafted = tuple[str, str, str, dict[str, Any], Priority]
# What a kind's field holds; the OpenAPI document has one schema per shape.
FieldShape = Literal["reference", "status", "flag", "message", "priority", "locale"]
# Every kind takes a `locale`: the language it is worded in (absent: the user's, else the default).
_LOCALE_FIELD_DESCRIPTION = "the language to word it in (absent or null: the user's, else the default)"
# A kind's facts that are its templates' variables (`rules.templates`): never a message or priority.
_VARIABLE_SHAPES = ("reference", "status", "flag")


@dataclass(frozen=True, slots=True)
class KindField:
    name: str
    shape: FieldShape
    required: bool
    description: str


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of typed notification: its fields (besides `kind` and `user_id`), what it is for,
    and why it takes no free-form field."""

    name: str
    fields: tuple[KindField, ...]
    description: str
    fixed: str  # said to a sender that gives it a field it does not take
    build: Callable[[Mapping[str, Any]], Drafted]

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset({KIND_FIELD, "user_id", *(f.name for f in self.fields)})


def _appointment(values: Mapping[str, Any]) -> Drafted:
    status: str = values["status"]
    title, default_message = _APPOINTMENT_TEXT[status]
    data = {"appointment_id": values["appointment_id"], "type": "appointment", "status": status}
    # A cancellation is high priority: a patient who misses it travels for nothing.
    priority: Priority = "high" if status == "cancelled" else "normal"
    return f"appointment_{status}", title, values.get("message") or default_message, data, priority


def _lab_result(values: Mapping[str, Any]) -> Drafted:
    test_name: str = values["test_name"]
    if values["abnormal"]:
        message = f"Your {test_name} result is ready. Please review it with your care team."
    else:
        message = f"Your {test_name} result is ready to view."
    # The flag raises the priority and is nowhere in the payload.
    data = {"type": "lab_result", "test_name": test_name}
    return "lab_result_ready", "Lab Result Ready", message, data, "high" if values["abnormal"] else "normal"


def _ai_analysis(values: Mapping[str, Any]) -> Drafted:
    analysis_type: str = values["analysis_type"]
    readable = analysis_type.replace("_", " ")
    data = {"type": "ai_analysis", "analysis_type": analysis_type, "analysis_id": values["analysis_id"]}
    priority = cast("Priority", values.get("priority") or "normal")
    return "ai_analysis_complete", "Analysis Ready", f"Your {readable} is ready to view.", data, priority


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "appointment",
            (
                KindField("appointment_id", "reference", True, "the appointment's id in your system"),
                KindField("status", "status", True, "what happened to it (cancelled: high priority)"),
                KindField("message", "message", False, "your own message; absent, null or empty: ours"),
                KindField("locale", "locale", False, _LOCALE_FIELD_DESCRIPTION),
            ),
            "An appointment's news, worded by its status",
            "its title, type and data follow from its status (cancelled: high priority)",
            _appointment,
        ),
        Kind(
            "lab_result",
            (
                KindField("test_name", "reference", True, "the test's name, shown to the patient"),
                KindField("abnormal", "flag", True, "true: high priority and a care-team line"),
                KindField("locale", "locale", False, _LOCALE_FIELD_DESCRIPTION),
            ),
            "A lab result is ready to view",
            "it says only that the result is ready, never values; the abnormal flag only raises the priority",
            _lab_result,
        ),
        Kind(
            "ai_analysis",
            (
                KindField("analysis_type", "reference", True, "e.g. symptom_analysis (_ read as spaces)"),
                KindField("analysis_id", "reference", True, "the analysis's id in your system"),
                KindField("priority", "priority", False, "absent or null: normal"),
                KindField("locale", "locale", False, _LOCALE_FIELD_DESCRIPTION),
            ),
            "An AI analysis is ready to view",
            "its wording and data follow from its type and id",
            _ai_analysis,
        ),
    )
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)
_KIND_CHOICES = f"must be one of {', '.join(KIND_NAMES)}"
_STATUS_CHOICES = f"must be one of {', '.join(APPOINTMENT_STATUSES)}"


def _problem(shape: FieldShape, value: object) -> str | None:
    if shape == "reference":
        return text_problem(value, MAX_REFERENCE_CHARS, required=True)
    if shape == "status":
        return None if value in APPOINTMENT_STATUSES else _STATUS_CHOICES
    if shape == "flag":
        # JSON's true or false: a "false" string is truthy, and would raise the priority silently.
        return None if isinstance(value, bool) else "is required and must be true or false"
    if shape == "message":
        return text_problem(value, MAX_MESSAGE_CHARS, required=False)
    if shape == "locale":
        return locale_problem(value)
    return priority_problem(value)


def _wording(kind: Kind, values: Mapping[str, Any]) -> Wording:
    """A typed notification's facts as its templates' variables, the locale it names, and whether
    the sender gave its own message (an appointment's: kept, only the title is templated)."""
    variables = {f.name: values[f.name] for f in kind.fields if f.shape in _VARIABLE_SHAPES}
    if "analysis_type" in variables:
        variables["analysis_name"] = str(variables["analysis_type"]).replace("_", " ")
    return Wording(variables, values.get("locale"), own_message=bool(values.get("message")))


def _typed(
    kind: Kind, payload: Mapping[str, Any], prefix: str, errors: FieldErrors
) -> NotificationDraft | None:
    """The draft of one kind's fields (`payload` holds nothing else), or None with every problem
    in `errors` under `prefix`."""
    valid = True
    user_id = payload.get("user_id")
    if (problem := user_id_problem(user_id)) is not None:
        valid = False
        errors.add(f"{prefix}user_id", problem)
    for field in kind.fields:
        if (problem := _problem(field.shape, payload.get(field.name))) is not None:
            valid = False
            errors.add(f"{prefix}{field.name}", problem)
    if not valid:
        return None
    type_, title, message, data, priority = kind.build(payload)
    try:
        # Every part was checked above; this encodes the data once, as every draft's is.
        draft = validated_draft(cast(str, user_id), type_, title, message, data, priority)
        draft.wording = _wording(kind, payload)
        return draft
    except FieldErrors as exc:  # the checks above leave nothing for it; still a 422, never a 500
        for path, problem in exc.details.items():
            errors.add(f"{prefix}{path}", problem)
        return None


def parse_typed(
    payload: dict[str, Any], *, prefix: str = "", errors: FieldErrors
) -> NotificationDraft | None:
    """An item with a `kind`: that kind's fields and nothing else."""
    kind = KINDS.get(payload[KIND_FIELD]) if isinstance(payload.get(KIND_FIELD), str) else None
    if kind is None:
        errors.add(f"{prefix}{KIND_FIELD}", _KIND_CHOICES)
        return None
    unknown = sorted(set(payload) - kind.field_names)
    for name in unknown:
        errors.add(f"{prefix}{name}", f"is not a field of kind {kind.name}: {kind.fixed}")
    draft = _typed(kind, payload, prefix, errors)
    return None if unknown else draft


def parse_item(
    payload: object, *, prefix: str = "", errors: FieldErrors, links: LinkPolicy | None = None
) -> NotificationDraft | None:
    """One item of a send: typed if it has a `kind`, else a notification in its own words. With a
    link policy, either may carry a `url` and `actions` (`rules.links`)."""
    found: Links | None = None
    links_ok = True
    if links is not None and isinstance(payload, dict) and not payload.keys().isdisjoint(LINK_FIELDS):
        links_ok, found = parse_links(payload, prefix, errors, links)
        payload = {k: v for k, v in payload.items() if k not in LINK_FIELDS}
    if isinstance(payload, dict) and KIND_FIELD in payload:
        draft = parse_typed(payload, prefix=prefix, errors=errors)
    else:
        draft = parse_draft(payload, prefix=prefix, errors=errors, default_type="notification")
    if draft is None or not links_ok:
        return None
    draft.links = found
    return draft


def _drafted(kind: str, values: dict[str, Any]) -> NotificationDraft:
    errors = FieldErrors()
    draft = _typed(KINDS[kind], values, "", errors)
    if draft is None:
        raise errors
    return draft


def appointment_draft(
    user_id: str, appointment_id: str, status: str, message: str | None = "", *, locale: str | None = None
) -> NotificationDraft:
    """An appointment's notification, or FieldErrors naming every problem."""
    return _drafted(
        "appointment",
        {
            "user_id": user_id,
            "appointment_id": appointment_id,
            "status": status,
            "message": message,
            "locale": locale,
        },
    )


def lab_result_draft(
    user_id: str, test_name: str, abnormal: bool, *, locale: str | None = None
) -> NotificationDraft:
    """A lab result is ready: never its values. Raises FieldErrors."""
    return _drafted(
        "lab_result", {"user_id": user_id, "test_name": test_name, "abnormal": abnormal, "locale": locale}
    )


def ai_analysis_draft(
    user_id: str,
    analysis_type: str,
    analysis_id: str,
    priority: str | None = None,
    *,
    locale: str | None = None,
) -> NotificationDraft:
    """An AI analysis is ready. Raises FieldErrors."""
    return _drafted(
        "ai_analysis",
        {
            "user_id": user_id,
            "analysis_type": analysis_type,
            "analysis_id": analysis_id,
            "priority": priority,
            "locale": locale,
        },
    )
