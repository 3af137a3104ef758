"""A domain pack: everything that makes a pipeline a *payments* (or IT, claims, KYC...) pipeline.

One folder: `domain.yaml` (labels, severity, action verbs and allowed actions per label, keyword
rules for the no-LLM path, the event contract's field names, PII settings, sources) plus Jinja
prompt templates and optional files (KB documents, golden cases). `load_pack(folder)` validates it
with typed models and semantic checks and raises `DomainPackError` with one line per problem,
each naming the file, the field and the reason. `current_pack()` is the pack that
`LLM_ASSETS_DOMAIN` selects (a folder, or the name of a pack shipped in `packs/`; the default is
`payments_ops`).

The pack's `fingerprint` hashes its declarations and templates (not its KB documents or golden
cases: those have their own versions, `kb_index_version` and the golden set's hash); it is part of
`prompt_version`, of each registry version's fingerprint and of the gate version, so a taxonomy
change is a new version, evaluated and promoted like any other.

Pure module: no Dagster import; only `settings` of this package.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llm_assets import settings

PACKS_DIR = Path(__file__).resolve().parent / "packs"
DEFAULT_PACK = "payments_ops"
PACK_FILE = "domain.yaml"
SEVERITY_MIN, SEVERITY_MAX = 1, 5
# The canonical columns of `raw/events` and the roles a pack maps its JSON field names onto.
EVENT_ROLES = ("id", "event_time", "text", "entity_key", "partner_key", "source")
ROLE_COLUMNS = {"id": "event_id", "event_time": "event_ts", "text": "payload_raw", "entity_key": "entity_id",
                "partner_key": "partner_id", "source": "source_system"}
# Built-in PII kinds (llm_assets.lib.redaction implements them); a pack turns them on or off.
BUILT_IN_PII_KINDS = ("email", "iban", "card", "national_id", "phone")
# What the prompt templates may use; anything else is a broken pack (`jinja2.meta` finds it).
TEMPLATE_VARIABLES = {
    "domain": "the pack's name and description: {{ domain.name }}, {{ domain.description }}",
    "labels": "list of {name, title, description, severity}",
    "action_verbs": "list of the allowed action verbs",
    "approval_levels": "list of approval levels, lowest first",
    "max_actions": "the most actions one case may get",
    "placeholders": "the PII placeholders redacted texts carry, e.g. <EMAIL>",
    "severity_min": "lowest severity (1)",
    "severity_max": "highest severity (5)",
}
PROMPT_PARTS = ("system", "labels", "severity", "actions", "summary")
SOURCE_FORMATS = ("jsonl", "csv", "parquet", "delta")


class DomainPackError(ValueError):
    """A pack that cannot be used; `problems` holds one `file: field: reason` line each."""

    def __init__(self, folder: Path | str, problems: list[str]):
        self.folder = str(folder)
        self.problems = problems
        super().__init__(f"domain pack {folder} is broken ({len(problems)} problem(s)):\n"
                         + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionSpec(_Strict):
    action: str = Field(description="one of the pack's action verbs")
    reason: str = Field(min_length=1, description="why, shown to the analyst")
    approval_level: str = Field(description="one of the pack's approval levels")


class LabelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="the label written in rows (snake_case)")
    title: str = Field(default="", description="a human title (summaries start with it); default from the name")
    description: str = Field(min_length=1, description="what belongs here: the prompts show it to the model")
    severity: int = Field(ge=SEVERITY_MIN, le=SEVERITY_MAX, description="base severity 1..5")
    actions: list[ActionSpec] = Field(min_length=1, description="the actions a case of this label gets by default")


class KeywordRule(_Strict):
    label: str
    keywords: list[str] = Field(min_length=1, description="lower-case phrases; one in the text picks the label")


class SeverityBump(_Strict):
    field: str = Field(description="a case field (curated column), e.g. partner_risk_tier")
    equals: str = Field(description="the value that bumps (compared as lower-case text)")
    by: int = Field(default=1, ge=1, le=SEVERITY_MAX - SEVERITY_MIN)


class EventSpec(_Strict):
    """Which JSON fields of an `events.raw` message play which role (all string fields)."""

    id: str = "event_id"
    event_time: str = "event_ts"
    text: str = "payload_raw"
    entity_key: str = "entity_id"
    partner_key: str = "partner_id"
    source: str = "source_system"
    keep_extra: list[str] | None = Field(
        default=None, description="other fields kept in `extra` (null: every other field)")
    max_payload_bytes: int = Field(default=16_384, ge=256, le=1_048_576)

    @field_validator(*EVENT_ROLES)
    @classmethod
    def _json_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", value):
            raise ValueError(f"{value!r} is not a plain JSON field name (letters, digits, _ . -)")
        return value

    @property
    def json_names(self) -> dict[str, str]:
        """canonical column -> the JSON field name of this pack's events."""
        return {ROLE_COLUMNS[role]: getattr(self, role) for role in EVENT_ROLES}


class PiiPattern(_Strict):
    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="placeholder name: <NAME> replaces a match")
    regex: str
    validator: str | None = Field(default=None, description="`luhn`, or a python-stdnum module (e.g. `us.ssn`, "
                                                             "`imei`) whose is_valid() must accept the match")


class PiiSpec(_Strict):
    kinds: dict[str, bool] = Field(default_factory=dict, description="built-in kinds on/off (default: all on)")
    patterns: list[PiiPattern] = Field(default_factory=list)


class SourcesSpec(_Strict):
    """Where the pack's data lives: a path relative to the pack folder, an absolute path or a URI;
    `${VAR}` is expanded (`${SAMPLE_DATA_DIR}`, `${LLM_ASSETS_HOME}` default like the settings)."""

    kb: str = Field(default="kb", description="folder (or object-store prefix) of KB documents")
    golden: str = Field(default="golden/cases.jsonl", description="labelled seed cases (JSONL, CSV or Parquet)")
    calibration: str | None = Field(default=None, description="labelled cases the gate calibrates on; none: the "
                                                              "golden `evaluation` split")
    retrieval_queries: str | None = Field(default=None, description="KB recall golden set (JSONL)")
    entity_signals: str | None = Field(default=None, description="per-partner signals (partner_id, risk_tier, ...)")
    exceptions: str | None = Field(default=None, description="upstream exceptions (event_id, exception_type)")


class PromptsSpec(_Strict):
    system: str = "prompts/system.j2"
    labels: str = "prompts/labels.j2"
    severity: str = "prompts/severity.j2"
    actions: str = "prompts/actions.j2"
    summary: str = "prompts/summary.j2"


class DomainSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1)
    labels: list[LabelSpec] = Field(min_length=2)
    keyword_rules: list[KeywordRule] = Field(default_factory=list, description="the no-LLM path's rules, in order")
    fallback_label: str = Field(description="the label when nothing else fits (keyword rule found nothing)")
    action_verbs: list[str] = Field(min_length=1)
    approval_levels: list[str] = Field(min_length=1, description="lowest first")
    max_actions: int = Field(default=3, ge=1, le=10)
    severity_bumps: list[SeverityBump] = Field(default_factory=list)
    max_severity_bump: int = Field(default=1, ge=0, le=SEVERITY_MAX - SEVERITY_MIN)
    event: EventSpec = Field(default_factory=EventSpec)
    prompt_fields: list[str] = Field(default_factory=list, description="case fields shown to the model")
    pii: PiiSpec = Field(default_factory=PiiSpec)
    sources: SourcesSpec = Field(default_factory=SourcesSpec)
    prompts: PromptsSpec = Field(default_factory=PromptsSpec)

    @field_validator("action_verbs", "approval_levels")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
                raise ValueError(f"{v!r} is not a lower-case word")
        return values


@dataclass(frozen=True, eq=False)
class DomainPack:
    """A loaded, validated pack (`load_pack`)."""

    root: Path
    spec: DomainSpec
    templates: dict[str, str]  # prompt part -> template source
    fingerprint: str = field(default="")

    # -- taxonomy ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        """`<name>@<fingerprint[:8]>`: what rows record beside their prompt version."""
        return f"{self.spec.name}@{self.fingerprint[:8]}"

    @cached_property
    def labels(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.spec.labels)

    @cached_property
    def _by_label(self) -> dict[str, LabelSpec]:
        return {label.name: label for label in self.spec.labels}

    @property
    def action_verbs(self) -> tuple[str, ...]:
        return tuple(self.spec.action_verbs)

    @property
    def approval_levels(self) -> tuple[str, ...]:
        return tuple(self.spec.approval_levels)

    @property
    def max_actions(self) -> int:
        return self.spec.max_actions

    @property
    def fallback_label(self) -> str:
        return self.spec.fallback_label

    def title(self, label: str) -> str:
        spec = self._by_label.get(label)
        return (spec.title or label.replace("_", " ").capitalize()) if spec else label

    def actions_for(self, label: str) -> list[dict[str, str]]:
        """The label's default actions (unknown label: the fallback label's), at most `max_actions`."""
        spec = self._by_label.get(label) or self._by_label[self.fallback_label]
        return [a.model_dump() for a in spec.actions][: self.max_actions]

    def severity_for(self, label: str, fields: dict[str, Any] | None = None) -> int:
        """The label's base severity, bumped by the pack's field conditions (at most `max_severity_bump`)."""
        spec = self._by_label.get(label)
        base = spec.severity if spec else SEVERITY_MIN
        fields = fields or {}
        bump = max((b.by for b in self.spec.severity_bumps
                    if str(fields.get(b.field, "")).lower() == b.equals.lower()), default=0)
        return max(SEVERITY_MIN, min(SEVERITY_MAX, base + min(bump, self.spec.max_severity_bump)))

    def keyword_label(self, text: str) -> tuple[str, float]:
        """The last-resort classifier: the first keyword rule with a phrase in the text, at a
        deliberately low confidence; the fallback label otherwise."""
        lowered = text.lower()
        for rule in self.spec.keyword_rules:
            if any(word in lowered for word in rule.keywords):
                return rule.label, 0.5
        return self.fallback_label, 0.3

    @cached_property
    def case_fields(self) -> tuple[str, ...]:
        """The curated fields a decision sees: the prompt's fields and those severity bumps read."""
        return tuple(dict.fromkeys([*self.spec.prompt_fields, *(b.field for b in self.spec.severity_bumps)]))

    # -- event contract ---------------------------------------------------------------------------
    @property
    def event(self) -> EventSpec:
        return self.spec.event

    # -- sources ----------------------------------------------------------------------------------
    def resolve(self, location: str | None) -> str | None:
        """A source location as a path or URI: `${VAR}` expanded, relative paths against the pack folder."""
        if not location:
            return None
        expanded = _expand(location)
        if "://" in expanded or Path(expanded).is_absolute():
            return expanded
        return str(self.root / expanded)

    # -- prompts ----------------------------------------------------------------------------------
    def template_context(self, placeholders: list[str]) -> dict[str, Any]:
        return {
            "domain": {"name": self.spec.name, "description": self.spec.description},
            "labels": [{"name": label.name, "title": self.title(label.name), "description": label.description,
                        "severity": label.severity} for label in self.spec.labels],
            "action_verbs": list(self.action_verbs), "approval_levels": list(self.approval_levels),
            "max_actions": self.max_actions, "placeholders": placeholders,
            "severity_min": SEVERITY_MIN, "severity_max": SEVERITY_MAX,
        }

    def render(self, part: str, placeholders: list[str]) -> str:
        """One prompt part rendered (strict: an unknown variable is an error, caught by `load_pack`)."""
        return _ENV.from_string(self.templates[part]).render(**self.template_context(placeholders)).strip()


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def _expand(location: str) -> str:
    defaults = {"SAMPLE_DATA_DIR": str(settings.sample_data_dir()), "LLM_ASSETS_HOME": str(settings.llm_assets_home())}

    def value(match: re.Match) -> str:
        name = match.group(1)
        return settings.environment().get(name) or defaults.get(name, match.group(0))

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", value, location)


def _location(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _semantic_problems(spec: DomainSpec, where: str) -> list[str]:
    problems = []
    names = [label.name for label in spec.labels]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: labels: duplicate label {name!r}")
    if spec.fallback_label not in names:
        problems.append(f"{where}: fallback_label: {spec.fallback_label!r} is not one of the labels {names}")
    for kind, values in (("action_verbs", spec.action_verbs), ("approval_levels", spec.approval_levels)):
        for value in sorted({v for v in values if values.count(v) > 1}):
            problems.append(f"{where}: {kind}: {value!r} is listed twice")
    for i, label in enumerate(spec.labels):
        for j, action in enumerate(label.actions):
            at = f"{where}: labels.{i}.actions.{j}"
            if action.action not in spec.action_verbs:
                problems.append(f"{at}.action: unknown verb {action.action!r} for label {label.name!r} "
                                f"(action_verbs: {spec.action_verbs})")
            if action.approval_level not in spec.approval_levels:
                problems.append(f"{at}.approval_level: unknown approval level {action.approval_level!r} "
                                f"(approval_levels: {spec.approval_levels})")
        if len(label.actions) > spec.max_actions:
            problems.append(f"{where}: labels.{i}.actions: {len(label.actions)} actions for {label.name!r}, "
                            f"more than max_actions {spec.max_actions}")
    for i, rule in enumerate(spec.keyword_rules):
        if rule.label not in names:
            problems.append(f"{where}: keyword_rules.{i}.label: unknown label {rule.label!r}")
        for word in rule.keywords:
            if not word.strip() or word != word.lower():
                problems.append(f"{where}: keyword_rules.{i}.keywords: {word!r} must be a non-empty lower-case phrase")
    event_names = list(spec.event.json_names.values())
    for name in sorted({n for n in event_names if event_names.count(n) > 1}):
        problems.append(f"{where}: event: the JSON field {name!r} plays two roles")
    for kind in spec.pii.kinds:
        if kind not in BUILT_IN_PII_KINDS:
            problems.append(f"{where}: pii.kinds.{kind}: unknown built-in kind (known: {list(BUILT_IN_PII_KINDS)})")
    for i, pattern in enumerate(spec.pii.patterns):
        try:
            compiled = re.compile(pattern.regex)
        except re.error as exc:
            problems.append(f"{where}: pii.patterns.{i}.regex: bad regular expression {pattern.regex!r}: {exc}")
        else:
            if compiled.fullmatch(""):
                problems.append(f"{where}: pii.patterns.{i}.regex: {pattern.regex!r} matches the empty text "
                                "(it would redact everywhere)")
        if pattern.validator is not None and _validator(pattern.validator) is None:
            problems.append(f"{where}: pii.patterns.{i}.validator: unknown validator {pattern.validator!r} "
                            "(`luhn` or a python-stdnum module such as `us.ssn`)")
        if pattern.name.lower() in BUILT_IN_PII_KINDS:
            problems.append(f"{where}: pii.patterns.{i}.name: {pattern.name!r} is a built-in kind")
    pattern_names = [pattern.name for pattern in spec.pii.patterns]
    for name in sorted({n for n in pattern_names if pattern_names.count(n) > 1}):
        problems.append(f"{where}: pii.patterns: the placeholder name {name!r} is declared twice")
    # Case fields are curated columns: a JSON name the event contract maps onto another column
    # (e.g. `service` -> partner_id) is never a case field, so a bump or prompt field on it is dead.
    renamed = {json_name: column for column, json_name in spec.event.json_names.items() if json_name != column}
    for at, name in [*((f"severity_bumps.{i}.field", b.field) for i, b in enumerate(spec.severity_bumps)),
                     *((f"prompt_fields.{i}", f) for i, f in enumerate(spec.prompt_fields))]:
        if name in renamed:
            problems.append(f"{where}: {at}: {name!r} is the events' JSON name; case fields use the column "
                            f"{renamed[name]!r}")
    return problems


def _validator(name: str):
    """`luhn` or `stdnum.<name>.is_valid`; None when unknown."""
    if name == "luhn":
        from stdnum import luhn
        return luhn.is_valid
    if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", name):
        return None
    try:
        module = importlib.import_module(f"stdnum.{name}")
    except ImportError:
        return None
    return getattr(module, "is_valid", None)


def pii_validator(name: str):
    found = _validator(name)
    if found is None:
        raise ValueError(f"unknown PII validator {name!r}")
    return found


def _template_problems(root: Path, spec: DomainSpec) -> tuple[dict[str, str], list[str]]:
    templates, problems = {}, []
    for part in PROMPT_PARTS:
        relative = getattr(spec.prompts, part)
        path = root / relative
        where = f"{relative}"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{where}: prompts.{part}: cannot read the template: {exc.strerror or exc}")
            continue
        try:
            parsed = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{where}: prompts.{part}: template syntax error at line {exc.lineno}: {exc.message}")
            continue
        unknown = sorted(jinja2.meta.find_undeclared_variables(parsed) - set(TEMPLATE_VARIABLES))
        if unknown:
            problems.append(f"{where}: prompts.{part}: unknown template variable(s) {unknown} "
                            f"(known: {sorted(TEMPLATE_VARIABLES)})")
            continue
        if not source.strip():
            problems.append(f"{where}: prompts.{part}: the template is empty")
            continue
        templates[part] = source
    return templates, problems


def _fingerprint(spec: DomainSpec, templates: dict[str, str]) -> str:
    blob = json.dumps({"spec": spec.model_dump(mode="json"), "templates": templates}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_pack(folder: Path | str) -> DomainPack:
    """Read and validate a pack folder; `DomainPackError` lists every problem found."""
    root = Path(folder).resolve()
    where = PACK_FILE
    path = root / PACK_FILE
    if not root.is_dir():
        raise DomainPackError(root, [f"{root}: not a folder"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DomainPackError(root, [f"{where}: cannot read it: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise DomainPackError(root, [f"{where}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise DomainPackError(root, [f"{where}: (top level): expected a mapping, got {type(raw).__name__}"])
    try:
        spec = DomainSpec.model_validate(raw)
    except ValidationError as exc:
        raise DomainPackError(root, [f"{where}: {_location(e)}: {e['msg']}" for e in exc.errors()]) from None
    problems = _semantic_problems(spec, where)
    templates, template_problems = _template_problems(root, spec)
    problems += template_problems
    if problems:
        raise DomainPackError(root, problems)
    pack = DomainPack(root=root, spec=spec, templates=templates, fingerprint=_fingerprint(spec, templates))
    for part in PROMPT_PARTS:  # render once: a filter or attribute error shows now, not in a run
        try:
            pack.render(part, ["<EMAIL>"])
        except jinja2.TemplateError as exc:
            problems.append(f"{getattr(spec.prompts, part)}: prompts.{part}: cannot render: {exc}")
    if problems:
        raise DomainPackError(root, problems)
    return pack


def pack_folder(selection: str | None = None) -> Path:
    """The folder `LLM_ASSETS_DOMAIN` (or `selection`) names: a path, or a pack shipped in `packs/`."""
    chosen = selection if selection is not None else settings.domain_selection()
    chosen = chosen or DEFAULT_PACK
    shipped = PACKS_DIR / chosen
    if re.fullmatch(r"[a-z][a-z0-9_]*", chosen) and shipped.is_dir():
        return shipped
    return Path(chosen).expanduser()


@lru_cache(maxsize=8)
def _load_cached(folder: str, stamp: tuple) -> DomainPack:
    return load_pack(folder)


def _stamp(folder: Path) -> tuple:
    """Modification times of the declarations and templates: an edited pack is read again."""
    try:
        files = [folder / PACK_FILE, *(folder / "prompts").glob("*.j2")]
        return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files if p.exists()))
    except OSError:
        return ()


_RECHECK_S = 5.0  # how often a long-lived process looks for an edited pack (redaction calls this per text)
_current: dict[str, tuple[float, DomainPack]] = {}


def current_pack() -> DomainPack:
    """The pack `LLM_ASSETS_DOMAIN` selects (default `payments_ops`), validated; read again when its
    declarations or templates change (checked at most every few seconds)."""
    selection = settings.domain_selection()
    now = time.monotonic()
    cached = _current.get(selection)
    if cached is not None and now - cached[0] < _RECHECK_S:
        return cached[1]
    folder = pack_folder(selection).resolve()
    pack = _load_cached(str(folder), _stamp(folder))
    _current[selection] = (now, pack)
    return pack
