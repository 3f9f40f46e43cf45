"""Templates of the standard texts: sandboxed Jinja, plain text, per notification type and locale.

A template is a title and a message, each Jinja source rendered with a typed notification's facts
(`TEMPLATE_TYPES` lists each type's variables). Rendering is plain text: autoescape is off, and
nothing rendered is ever trusted as HTML (the dashboard escapes it, the SDKs set text). Jinja's
`SandboxedEnvironment` keeps a template from reaching Python's internals; on top of it only a
small language is accepted, so rendering is cheap and its output bounded by the source and the
facts: text, `{{ variable }}`, `{% if %}`/`{% elif %}`/`{% else %}`, comparisons, `and`/`or`/
`not`, `~`, the filters in `FILTERS` and tests in `TESTS`. No loops, calls, attribute access,
arithmetic, macros, includes or assignments.

Minimum necessary: the facts are what the typed send already carries (a lab result's abnormal flag
may choose a sentence, as the built-in text does; values never exist to render).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from diagnoxix.rules.notification import MAX_MESSAGE_CHARS, MAX_TITLE_CHARS

# Template sources: a title's is a line, a message's a short paragraph with its conditions.
MAX_TITLE_TEMPLATE_CHARS = 400
MAX_MESSAGE_TEMPLATE_CHARS = 4000
FILTERS = frozenset({"upper", "lower", "capitalize", "title", "trim", "default"})
TESTS = frozenset({"defined", "undefined", "none", "true", "false", "eq", "ne"})
_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
    nodes.Filter,
    nodes.Test,
)

APPOINTMENT_TYPES = {
    f"appointment_{status}": status
    for status in ("created", "confirmed", "cancelled", "rescheduled", "reminder")
}


@dataclass(frozen=True, slots=True)
class TemplateType:
    """A type of the standard texts: the variables its templates get, with an example of each
    (a template is tried with every example set before it is saved)."""

    name: str
    variables: tuple[str, ...]
    examples: tuple[Mapping[str, Any], ...]


def _appointment(status: str) -> TemplateType:
    return TemplateType(
        f"appointment_{status}",
        ("appointment_id", "status"),
        ({"appointment_id": "appointment-456", "status": status},),
    )


TEMPLATE_TYPES: dict[str, TemplateType] = {
    t.name: t
    for t in (
        *(_appointment(status) for status in APPOINTMENT_TYPES.values()),
        TemplateType(
            "lab_result_ready",
            ("test_name", "abnormal"),
            (
                {"test_name": "Complete Blood Count", "abnormal": False},
                {"test_name": "Complete Blood Count", "abnormal": True},
            ),
        ),
        TemplateType(
            "ai_analysis_complete",
            ("analysis_type", "analysis_id", "analysis_name"),
            (
                {
                    "analysis_type": "symptom_analysis",
                    "analysis_id": "analysis-42",
                    "analysis_name": "symptom analysis",
                },
            ),
        ),
    )
}

# The built-in texts: (type, locale) → (title, message). English is what `rules.kinds` words
# without a template, so a template that fails falls back to the same sentence.
BUILT_IN: dict[tuple[str, str], tuple[str, str]] = {
    ("appointment_created", "en"): ("Appointment Scheduled", "Your appointment has been scheduled."),
    ("appointment_confirmed", "en"): ("Appointment Confirmed", "Your appointment has been confirmed."),
    ("appointment_cancelled", "en"): ("Appointment Cancelled", "Your appointment has been cancelled."),
    ("appointment_rescheduled", "en"): ("Appointment Rescheduled", "Your appointment has been rescheduled."),
    ("appointment_reminder", "en"): ("Appointment Reminder", "You have an upcoming appointment."),
    (
        "lab_result_ready",
        "en",
    ): (
        "Lab Result Ready",
        "{% if abnormal %}Your {{ test_name }} result is ready. Please review it with your care team."
        "{% else %}Your {{ test_name }} result is ready to view.{% endif %}",
    ),
    ("ai_analysis_complete", "en"): ("Analysis Ready", "Your {{ analysis_name }} is ready to view."),
    ("appointment_created", "de"): ("Termin vereinbart", "Ihr Termin wurde vereinbart."),
    ("appointment_confirmed", "de"): ("Termin bestätigt", "Ihr Termin wurde bestätigt."),
    ("appointment_cancelled", "de"): ("Termin abgesagt", "Ihr Termin wurde abgesagt."),
    ("appointment_rescheduled", "de"): ("Termin verschoben", "Ihr Termin wurde verschoben."),
    ("appointment_reminder", "de"): ("Terminerinnerung", "Sie haben demnächst einen Termin."),
    (
        "lab_result_ready",
        "de",
    ): (
        "Laborergebnis liegt vor",
        "Ihr Ergebnis ({{ test_name }}) liegt vor.{% if abnormal %} Bitte besprechen Sie es mit Ihrem"
        " Behandlungsteam.{% else %} Sie können es jetzt ansehen.{% endif %}",
    ),
    ("ai_analysis_complete", "de"): ("Analyse liegt vor", "Ihre Analyse ({{ analysis_name }}) liegt vor."),
    ("appointment_created", "es"): ("Cita programada", "Su cita ha sido programada."),
    ("appointment_confirmed", "es"): ("Cita confirmada", "Su cita ha sido confirmada."),
    ("appointment_cancelled", "es"): ("Cita cancelada", "Su cita ha sido cancelada."),
    ("appointment_rescheduled", "es"): ("Cita reprogramada", "Su cita ha sido reprogramada."),
    ("appointment_reminder", "es"): ("Recordatorio de cita", "Tiene una cita próximamente."),
    (
        "lab_result_ready",
        "es",
    ): (
        "Resultado de laboratorio disponible",
        "Su resultado de {{ test_name }} está listo.{% if abnormal %} Revíselo con su equipo de"
        " atención.{% else %}{% endif %}",
    ),
    ("ai_analysis_complete", "es"): ("Análisis disponible", "Su análisis ({{ analysis_name }}) está listo."),
}


class TemplateProblem(ValueError):
    """A template that does not compile, uses what the sandbox does not offer, or renders badly.
    The message names the problem, never a value rendered."""


class Sandbox:
    """Compiles and renders templates in a locked-down Jinja environment (one per app)."""

    def __init__(self) -> None:
        env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)
        env.filters = {name: f for name, f in env.filters.items() if name in FILTERS}
        env.tests = {name: t for name, t in env.tests.items() if name in TESTS}
        env.globals = {}
        self._env = env

    def compile(self, source: str, limit: int, variables: tuple[str, ...]) -> Any:
        """The compiled template, or TemplateProblem."""
        if len(source) > limit:
            raise TemplateProblem(f"must be at most {limit} characters (got {len(source)})")
        if "\x00" in source:
            raise TemplateProblem("must not contain NUL characters")
        try:
            tree = self._env.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"is not a valid template: {exc.message} (line {exc.lineno})") from None
        self._check(tree, variables)
        return self._env.from_string(tree)

    def _check(self, node: nodes.Node, variables: tuple[str, ...]) -> None:
        if not isinstance(node, _NODES):
            raise TemplateProblem(f"uses {type(node).__name__}, which templates do not offer")
        if isinstance(node, nodes.Name) and node.name not in variables:
            raise TemplateProblem(f"names {node.name!r}; this type's variables are {', '.join(variables)}")
        if isinstance(node, nodes.Filter | nodes.Test):
            allowed = FILTERS if isinstance(node, nodes.Filter) else TESTS
            if node.name not in allowed or node.kwargs or node.dyn_args or node.dyn_kwargs:
                raise TemplateProblem(f"uses {node.name!r}; templates offer {', '.join(sorted(allowed))}")
        for child in node.iter_child_nodes():
            self._check(child, variables)

    def render(self, template: Any, variables: Mapping[str, Any], limit: int, *, required: bool) -> str:
        """The text, stripped of surrounding whitespace, or TemplateProblem (never with a value)."""
        try:
            text = str(template.render(**variables)).strip()
        except Exception as exc:  # any failure of a staff-written template is a fallback
            raise TemplateProblem(f"failed to render ({type(exc).__name__})") from None
        if len(text) > limit:
            raise TemplateProblem(f"renders longer than {limit} characters")
        if required and not text:
            raise TemplateProblem("renders blank")
        if "\x00" in text:
            raise TemplateProblem("renders a NUL character")
        return text


def check_template(sandbox: Sandbox, type: str, title: str, message: str) -> dict[str, str]:
    """Problems with a staff template of `type` by field (`title`, `message`): each must compile
    and render every example of the type. Empty: it may be saved."""
    problems: dict[str, str] = {}
    kind = TEMPLATE_TYPES.get(type)
    if kind is None:
        return {"type": f"must be one of {', '.join(TEMPLATE_TYPES)}"}
    for field, source, limit, source_limit in (
        ("title", title, MAX_TITLE_CHARS, MAX_TITLE_TEMPLATE_CHARS),
        ("message", message, MAX_MESSAGE_CHARS, MAX_MESSAGE_TEMPLATE_CHARS),
    ):
        try:
            compiled = sandbox.compile(source, source_limit, kind.variables)
            for example in kind.examples:
                sandbox.render(compiled, example, limit, required=field == "title")
        except TemplateProblem as exc:
            problems[field] = str(exc)
    return problems
