"""Domain packs: the IT service desk pack beside payments_ops, `domain init` / `domain check`, broken
packs (one problem line each, naming the file, the field and the reason) and LLM_ASSETS_DOMAIN."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml

from llm_assets.cli import build_parser
from llm_assets.domain import current_pack, load_pack
from llm_assets.domain.commands import KB_SUFFIXES, PROBLEM, check_pack, init_pack, run
from llm_assets.domain.golden import read_labelled
from llm_assets.domain.pack import PACKS_DIR, ROLE_COLUMNS, pack_folder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IT_PACK = REPO / "tests" / "packs" / "it_service_desk"
PAYMENTS_PACK = PACKS_DIR / "payments_ops"
IT_LABELS = ("access_request", "hardware_failure", "network_outage", "software_bug", "security_incident",
             "how_to_question")


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(PROBLEM)]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """`llm-assets ARGV` in this process (the parser and the command's exit code, no main() side effects)."""
    code = run(build_parser().parse_args(argv))
    return code, capsys.readouterr().out


@pytest.fixture
def sample_signals(tmp_path, monkeypatch) -> Path:
    """The two files payments_ops names under ${SAMPLE_DATA_DIR} (the sample generator writes them)."""
    folder = tmp_path / "sample_data"
    folder.mkdir()
    (folder / "entity_signals.jsonl").write_text(json.dumps(
        {"entity_id": "E-1", "device_id": "D-1", "customer_hash": "c1", "partner_risk_tier": "high",
         "features": {"velocity_1h": 1.0}}) + "\n")
    (folder / "exceptions.jsonl").write_text(json.dumps(
        {"event_id": "evt-1", "is_exception": True, "exception_type": "amount_mismatch"}) + "\n")
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(folder))
    return folder


# -- the two packs ---------------------------------------------------------------------------------
def test_it_pack_passes_check_on_the_command_line():
    executable = Path(sys.executable).parent / "llm-assets"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "llm_assets.cli"]
    done = subprocess.run([*command, "domain", "check", "tests/packs/it_service_desk"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "pack it_service_desk (version it_service_desk@" in out
    for label in IT_LABELS:
        assert label in out
    assert "ticket_id -> event_id" in out and "service -> partner_id" in out
    assert "<EMPLOYEE_ID>" in out and "validator imei" in out
    assert ".pdf 1" in out and ".md 7" in out and ".html 1" in out and ".txt 1" in out
    assert "per split: evaluation 48, held_out 15" in out
    assert "signals.csv" in out and "(csv): 12 signal rows" in out
    assert not problems(out.splitlines())
    assert out.rstrip().splitlines()[-1].startswith("OK: it_service_desk@")


def test_payments_pack_passes_check(sample_signals):
    ok, lines = check_pack(PAYMENTS_PACK)
    assert ok, "\n".join(lines)
    text = "\n".join(lines)
    assert "pack payments_ops (version payments_ops@" in text
    assert "fraud_suspected" in text and "escalate (supervisor)" in text
    assert f"{sample_signals}/entity_signals.jsonl (jsonl): 1 signal rows" in text


def test_payments_pack_without_sample_data_names_the_missing_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(tmp_path / "nothing_here"))
    ok, lines = check_pack(PAYMENTS_PACK)
    assert not ok
    found = problems(lines)
    assert len(found) == 2
    assert found[0].startswith("problem: ${SAMPLE_DATA_DIR}/entity_signals.jsonl: sources.entity_signals: "
                               "no such file or folder")
    assert all("llm-assets sample-data" in line for line in found)


def test_it_pack_is_unlike_payments():
    it, payments = load_pack(IT_PACK), load_pack(PAYMENTS_PACK)
    assert it.labels == IT_LABELS
    assert not set(it.labels) & set(payments.labels)
    assert not set(it.action_verbs) & set(payments.action_verbs)
    assert not set(it.approval_levels) & set(payments.approval_levels)
    assert it.fallback_label == "how_to_question"
    # Every event field has another JSON name than payments' (the canonical column names).
    assert all(getattr(it.event, role) != column for role, column in ROLE_COLUMNS.items())
    prompts = " ".join(it.render(part, ["<EMAIL>", "<EMPLOYEE_ID>"]) for part in it.templates).lower()
    for word in ("payment", "fraud", "card", "partner", "chargeback", "settlement", "ledger", "customer"):
        assert word not in prompts
    assert {p.name for p in it.spec.pii.patterns} == {"EMPLOYEE_ID", "IMEI"}
    # Bumps on its own fields: a ticket about single sign-on from the pager is critical.
    assert it.severity_for("network_outage", {"partner_id": "sso", "source_system": "pager"}) == 5
    assert it.severity_for("how_to_question", {"partner_id": "sso"}) == 3
    assert it.severity_for("how_to_question", {}) == 1


def test_it_golden_and_calibration_sets():
    pack = load_pack(IT_PACK)
    golden = read_labelled(pack, pack.spec.sources.golden)
    calibration = read_labelled(pack, pack.spec.sources.calibration, what="calibration cases")
    assert golden.height >= 60 and calibration.height >= 60
    for frame in (golden, calibration):
        counts = frame.group_by("label").len()
        assert set(counts["label"]) == set(IT_LABELS) and counts["len"].min() >= 10
    assert 0.2 <= (golden["split"] == "held_out").mean() <= 0.3
    assert calibration["split"].is_null().all()
    assert not set(golden["payload_raw"]) & set(calibration["payload_raw"])
    texts = " ".join(golden["payload_raw"])
    assert "EMP-" in texts and "@corp.example" in texts and "07700 900" in texts


def test_it_kb_pdf_is_generated_reproducibly_and_its_text_extracts():
    from tests.packs.it_service_desk.make_pdf import build_pdf

    committed = (IT_PACK / "kb" / "vpn_policy.pdf").read_bytes()
    assert build_pdf() == committed
    pypdf = pytest.importorskip("pypdf")
    text = pypdf.PdfReader(IT_PACK / "kb" / "vpn_policy.pdf", strict=True).pages[0].extract_text()
    assert "Remote access (VPN) policy" in text
    assert "Personal devices must never connect to the VPN" in text


def test_it_events_are_recent_deterministic_and_include_malformed_ones():
    from tests.packs.it_service_desk.events import MALFORMED_COUNT, events, expected_labels

    now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    messages = events(now)
    assert messages == events(now) and len(messages) == 120 + MALFORMED_COUNT
    good, bad = messages[:120], messages[120:]
    for message in good:
        assert all(isinstance(message[f], str) and message[f] for f in
                   ("ticket_id", "opened_at", "description", "requester", "service", "channel"))
        opened = datetime.fromisoformat(message["opened_at"].replace("Z", "+00:00"))
        assert opened.tzinfo is not None and now - timedelta(days=2) <= opened < now
    assert len({m["ticket_id"] for m in good}) == 120
    assert set(expected_labels().values()) == set(IT_LABELS)
    assert any("ticket_id" not in m for m in bad)
    assert any(not isinstance(m.get("description"), str) for m in bad)


def test_it_events_pass_or_fail_the_event_contract_with_the_packs_field_names():
    from llm_assets.ingest.contract import EventNames, validate_values
    from tests.packs.it_service_desk.events import MALFORMED, events

    pack = load_pack(IT_PACK)
    messages = events(datetime.now(timezone.utc))
    checked = validate_values([json.dumps(m).encode() for m in messages], names=EventNames.from_pack(pack),
                              max_payload_bytes=pack.event.max_payload_bytes)
    assert checked.events.height == 120
    assert [i for i, _ in checked.invalid] == list(range(120, 120 + len(MALFORMED)))
    reasons = " | ".join(reason for _, reason in checked.invalid)
    assert "ticket_id" in reasons and "description must be a string" in reasons
    first = checked.events.sort("event_id").row(0, named=True)
    assert first["event_id"] == "INC-700000" and first["partner_id"] == "erp" and first["entity_id"].startswith("usr-")


def test_it_kb_loads_with_the_kb_loader_and_the_retrieval_queries_name_its_documents():
    from llm_assets.knowledge_base.corpus import SUPPORTED_SUFFIXES, load_corpus, load_golden_queries

    assert set(SUPPORTED_SUFFIXES) == set(KB_SUFFIXES)  # `domain check` counts what the KB loader reads
    corpus = load_corpus(IT_PACK / "kb")
    assert not corpus.problems
    ids = {doc.doc_id for doc in corpus.documents}
    files = {doc.source for doc in corpus.documents if doc.type != "resolved_case"}
    assert len(files) == 10 and {"vpn_policy.pdf", "faq/how_to.html", "runbooks/vpn.md"} <= ids
    resolved = [doc for doc in corpus.documents if doc.type == "resolved_case"]  # what the gate trains on
    assert len(resolved) >= 150 and {doc.label for doc in resolved} == set(load_pack(IT_PACK).labels)
    queries = load_golden_queries(IT_PACK / "golden" / "retrieval_queries.jsonl")
    assert len(queries) >= 8 and all(set(q.relevant_doc_ids) <= ids for q in queries)


# -- init ------------------------------------------------------------------------------------------
def test_init_writes_a_skeleton_that_passes_check(tmp_path, capsys):
    folder = tmp_path / "claims-Pack"
    code, out = cli(["domain", "init", str(folder)], capsys)
    assert code == 0 and "wrote a skeleton pack" in out
    for name in ("domain.yaml", "kb/README.md", "golden/cases.jsonl", *(f"prompts/{p}.j2" for p in
                                                                        ("system", "labels", "severity",
                                                                         "actions", "summary"))):
        assert (folder / name).is_file(), name
    text = (folder / "domain.yaml").read_text()
    assert text.count("\n#") > 30  # commented
    code, out = cli(["domain", "check", str(folder)], capsys)
    assert code == 0, out
    assert "pack claims_pack (version claims_pack@" in out and out.rstrip().splitlines()[-1].startswith("OK:")


def test_init_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, out = cli(["domain", "init", str(tmp_path)], capsys)
    assert code == 2 and "is not empty" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert init_pack(empty) == empty and (empty / "domain.yaml").is_file()


# -- broken packs ----------------------------------------------------------------------------------
def edit_yaml(change):
    def mutate(root: Path) -> None:
        spec = yaml.safe_load((root / "domain.yaml").read_text())
        change(spec)
        (root / "domain.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return mutate


def write(relative: str, text: str | bytes):
    def mutate(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return mutate


def append_jsonl(relative: str, row: dict):
    def mutate(root: Path) -> None:
        with (root / relative).open("a") as f:
            f.write(json.dumps(row) + "\n")
    return mutate


def delete(relative: str):
    return lambda root: (root / relative).unlink()


def empty_kb(root: Path) -> None:
    shutil.rmtree(root / "kb")
    (root / "kb").mkdir()
    (root / "kb" / "notes.docx").write_bytes(b"PK\x03\x04 not a supported type")


def _set(path: str, value):
    """A change that sets one dotted path of the spec (list indexes as numbers)."""
    def change(spec: dict) -> None:
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return change


# (id, base pack, break it, file, field, reason substrings)
BROKEN = [
    ("label_without_actions", "it", edit_yaml(_set("labels.0.actions", [])),
     "domain.yaml", "labels.0.actions", ["at least 1 item"]),
    ("unknown_verb", "it", edit_yaml(_set("labels.1.actions.0.action", "reboot")),
     "domain.yaml", "labels.1.actions.0.action", ["unknown verb 'reboot'", "hardware_failure"]),
    ("unknown_approval_level", "it", edit_yaml(_set("labels.0.actions.0.approval_level", "cto")),
     "domain.yaml", "labels.0.actions.0.approval_level", ["unknown approval level 'cto'"]),
    ("bad_pii_regex", "it", edit_yaml(_set("pii.patterns.0.regex", r"\bEMP-(\d{6}\b")),
     "domain.yaml", "pii.patterns.0.regex", ["bad regular expression", "missing )"]),
    ("pii_regex_matching_nothing_at_all", "skeleton", edit_yaml(_set("pii.patterns.0.regex", r"\d*")),
     "domain.yaml", "pii.patterns.0.regex", ["matches the empty text"]),
    ("unknown_validator", "it", edit_yaml(_set("pii.patterns.1.validator", "imei_v2")),
     "domain.yaml", "pii.patterns.1.validator", ["unknown validator 'imei_v2'"]),
    ("duplicate_pii_placeholder", "it", edit_yaml(_set("pii.patterns.1.name", "EMPLOYEE_ID")),
     "domain.yaml", "pii.patterns", ["the placeholder name 'EMPLOYEE_ID' is declared twice"]),
    ("duplicate_label", "it", edit_yaml(lambda spec: spec["labels"].append(dict(spec["labels"][2]))),
     "domain.yaml", "labels", ["duplicate label 'network_outage'"]),
    ("template_unknown_variable", "it", write("prompts/summary.j2", "Summary of {{ ticket.subject }}."),
     "prompts/summary.j2", "prompts.summary", ["unknown template variable", "'ticket'"]),
    ("template_syntax_error", "skeleton", write("prompts/labels.j2", "{% for label in labels %}{{ label.name }}"),
     "prompts/labels.j2", "prompts.labels", ["template syntax error", "endfor"]),
    ("missing_template", "it", delete("prompts/severity.j2"),
     "prompts/severity.j2", "prompts.severity", ["cannot read the template", "No such file"]),
    ("empty_golden", "skeleton", write("golden/cases.jsonl", ""),
     "golden/cases.jsonl", "sources.golden", ["no golden cases in it", "empty"]),
    ("golden_unknown_label", "it",
     append_jsonl("golden/cases.jsonl", {"ticket_id": "SD-G-999", "description": "the printer is jammed",
                                         "label": "printer_jam"}),
     "golden/cases.jsonl", "sources.golden", ["row 64", "label 'printer_jam' is not one of the pack's labels"]),
    ("missing_entity_signals", "it", edit_yaml(_set("sources.entity_signals", "signals/missing.csv")),
     "signals/missing.csv", "sources.entity_signals", ["no such file or folder", "missing.csv"]),
    ("unreadable_entity_signals", "it",
     lambda root: (edit_yaml(_set("sources.entity_signals", "signals.parquet"))(root),
                   write("signals.parquet", b"this is not parquet")(root)),
     "signals.parquet", "sources.entity_signals", ["cannot read it as parquet"]),
    ("missing_calibration", "skeleton", edit_yaml(_set("sources.calibration", "golden/calibration.jsonl")),
     "golden/calibration.jsonl", "sources.calibration", ["no such file or folder"]),
    ("kb_without_documents", "it", empty_kb,
     "kb", "sources.kb", ["no KB document", ".md", ".pdf"]),
    ("kb_pdf_that_is_not_a_pdf", "skeleton", write("kb/policy.pdf", "just text with a .pdf name"),
     "kb/policy.pdf", "sources.kb", ["not a PDF file"]),
    ("retrieval_query_on_a_missing_document", "it",
     append_jsonl("golden/retrieval_queries.jsonl",
                  {"query": "printer jams", "relevant_doc_ids": ["runbooks/printers.md"]}),
     "golden/retrieval_queries.jsonl", "sources.retrieval_queries", ["line 11", "'runbooks/printers.md'",
                                                                     "not KB documents"]),
    ("fallback_label_not_a_label", "it", edit_yaml(_set("fallback_label", "printer")),
     "domain.yaml", "fallback_label", ["'printer' is not one of the labels"]),
    ("severity_bump_on_a_json_name", "it", edit_yaml(_set("severity_bumps.0.field", "service")),
     "domain.yaml", "severity_bumps.0.field", ["'service' is the events' JSON name", "'partner_id'"]),
    ("yaml_not_a_mapping", "skeleton", write("domain.yaml", "- name: x\n- labels: []\n"),
     "domain.yaml", "(top level)", ["expected a mapping, got list"]),
    ("unknown_top_level_field", "it", edit_yaml(lambda spec: spec.update(colour="blue")),
     "domain.yaml", "colour", ["Extra inputs are not permitted"]),
]


@pytest.fixture(scope="module")
def skeleton(tmp_path_factory) -> Path:
    return init_pack(tmp_path_factory.mktemp("skeleton") / "skeleton")


@pytest.mark.parametrize(("base", "mutate", "file", "field", "reasons"),
                         [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_broken_pack_fails_with_one_problem_line(base, mutate, file, field, reasons, skeleton, tmp_path, capsys):
    root = tmp_path / "pack"
    shutil.copytree(IT_PACK if base == "it" else skeleton, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert check_pack(root)[0], "the copy must pass before it is broken"
    mutate(root)
    code, out = cli(["domain", "check", str(root)], capsys)
    assert code != 0
    found = problems(out.splitlines())
    assert len(found) == 1, out
    assert found[0].startswith(f"{PROBLEM}{file}: {field}: "), found[0]
    for reason in reasons:
        assert reason in found[0], found[0]
    assert out.rstrip().splitlines()[-1].startswith("FAILED: ")


def test_kb_on_an_object_store_is_listed_with_fsspec(skeleton, tmp_path):
    import fsspec

    prefix = f"memory://kb-{uuid.uuid4().hex[:8]}/docs"
    root = tmp_path / "pack"
    shutil.copytree(skeleton, root)
    edit_yaml(_set("sources.kb", prefix))(root)
    ok, lines = check_pack(root)
    assert not ok and problems(lines) == [f"{PROBLEM}{prefix}: sources.kb: no such file or folder: {prefix}"]
    fs = fsspec.filesystem("memory")
    fs.pipe(prefix.removeprefix("memory:/") + "/guide.md", b"# Guide\n\nSome text.\n")
    fs.pipe(prefix.removeprefix("memory:/") + "/faq/index.html", b"<h1>FAQ</h1><p>text</p>")
    ok, lines = check_pack(root)
    assert ok, "\n".join(lines)
    assert any(f"kb: {prefix} -> {prefix}: 2 document(s) (.html 1, .md 1)" in line for line in lines)


# -- LLM_ASSETS_DOMAIN -----------------------------------------------------------------------------
def test_domain_selection_by_shipped_name_and_by_folder(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("LLM_ASSETS_DOMAIN", raising=False)
    assert pack_folder() == PACKS_DIR / "payments_ops" and current_pack().name == "payments_ops"
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", "payments_ops")
    assert pack_folder() == PACKS_DIR / "payments_ops" and current_pack().name == "payments_ops"
    for selection in ("tests/packs/it_service_desk", str(IT_PACK)):
        monkeypatch.setenv("LLM_ASSETS_DOMAIN", selection)
        assert pack_folder().resolve() == IT_PACK
        assert current_pack().name == "it_service_desk" and current_pack().labels == IT_LABELS
        code, out = cli(["domain", "check"], capsys)  # no DIR: the selected pack
        assert code == 0 and "pack it_service_desk (version" in out
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", "no_such_pack")
    assert pack_folder() == Path("no_such_pack")
    code, out = cli(["domain", "check"], capsys)
    assert code == 1 and problems(out.splitlines()) == [f"{PROBLEM}{REPO / 'no_such_pack'}: not a folder"]


def test_a_broken_pack_stops_the_code_location_from_loading_with_its_reasons(skeleton, tmp_path):
    """Nothing is ever materialized with a broken pack: the code server cannot load the location, and
    the error Dagster shows in the UI is the pack's problem lines."""
    pack = tmp_path / "pack"
    shutil.copytree(skeleton, pack)
    text = (pack / "domain.yaml").read_text()
    (pack / "domain.yaml").write_text(text.replace("fallback_label: question", "fallback_label: nothing_like_it"))
    env = {**os.environ, "LLM_ASSETS_DOMAIN": str(pack), "LLM_ASSETS_HOME": str(tmp_path / "home")}
    loaded = subprocess.run([sys.executable, "-c", "import llm_assets.definitions"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode != 0
    assert "DomainPackError" in loaded.stderr and "domain.yaml: fallback_label: 'nothing_like_it'" in loaded.stderr


def test_golden_cases_can_be_a_delta_table(tmp_path):
    pack = load_pack(IT_PACK)
    rows = [json.loads(line) for line in (IT_PACK / "golden" / "cases.jsonl").read_text().splitlines()]
    pl.DataFrame(rows).write_delta(str(tmp_path / "golden_table"))
    from_table = read_labelled(pack, str(tmp_path / "golden_table"))
    from_file = read_labelled(pack, pack.spec.sources.golden)
    assert from_table.equals(from_file)
