"""`llm-assets verify-audit`: every bundle verifies, every recorded bundle exists, every row is vouched for.

Three checks, each naming what failed:

1. **Bundles**: each bundle file's signature, key id and canonical bytes (`audit.verify_bundle`).
2. **Manifest**: the ledger `enrichment/outbox` (under `DELTA_ROOT`) lists, per date, the bundles
   that must exist with the sha256 they were written with: a deleted or replaced bundle fails, and
   so does a bundle file the ledger does not list (a run that died between writing and recording
   it; the date's next run removes it).
3. **Rows**: every row of `enriched/cases` of a recorded date, hashed as it is stored now
   (`audit.row_sha256` of its decision fields), must be the content version a verifying bundle of
   that date lists: a label, severity, summary or action edited in Delta fails and names the case.

Checks 2 and 3 run on an artifact root (or a folder under its `audit/`) when the Delta tables are
given; a single bundle file, or dates from before the ledger existed, get check 1.
"""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict
from pathlib import Path
from typing import Mapping, TextIO

import polars as pl

from llm_assets import settings
from llm_assets.asset_keys import ENRICHED_CASES, ENRICHED_OUTBOX
from llm_assets.enrichment import audit, outbox
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.signing import SIGNING_KEY_VARIABLE, MissingSigningKey, load_signing_key

MAX_EVENT_IDS_SHOWN = 20
MAX_CASES_NAMED = 20


def _store_and_prefix(target: str) -> tuple[ArtifactStore, str, bool]:
    """(store, prefix of the bundles in it, whether the store is an artifact root).

    `<root>/audit/enriched_cases/<date>` and `<root>/audit` resolve to `<root>` with that prefix, so
    the manifest's paths (relative to the artifact root) apply; any other folder is an artifact
    root when it holds `audit/`, else a plain folder of bundles; a `.json` target is one file.
    """
    trimmed = target.rstrip("/")
    if trimmed.endswith(".json"):
        return ArtifactStore(root=target), "", False
    root, found, rest = (trimmed + "/").rpartition(f"/{audit.AUDIT_PREFIX}/")
    if found and root:  # <root>/audit[/...]: the manifest's paths are relative to <root>
        return ArtifactStore(root=root), f"{audit.AUDIT_PREFIX}/{rest}".rstrip("/"), True
    store = ArtifactStore(root=target)
    if store.list(audit.AUDIT_PREFIX):
        return store, audit.AUDIT_PREFIX, True
    return store, "", False


def _print_bundle(result: audit.VerificationResult, where: str, out: TextIO) -> None:
    if not result.ok:
        print(f"FAILED {where}: {result.reason}", file=out)
        return
    shown = ", ".join(result.event_ids[:MAX_EVENT_IDS_SHOWN])
    more = len(result.event_ids) - MAX_EVENT_IDS_SHOWN
    print(f"OK {where}: {result.reason}", file=out)
    print(f"  partition: {result.partition}", file=out)
    print(f"  cases: {len(result.event_ids)}", file=out)
    print(f"  event ids: {shown}" + (f" ... (+{more} more)" if more > 0 else ""), file=out)


def _partition_problems(store: ArtifactStore, day: str, recorded: dict[str, str], files: dict[str, bytes],
                        verified: dict[str, audit.VerificationResult], rows: pl.DataFrame) -> list[str]:
    """What is wrong with one recorded date: its manifest against the files, its rows against the bundles."""
    problems = []
    for path, digest in sorted(recorded.items()):
        if path not in files:
            problems.append(f"bundle {store.uri(path)} is recorded in the manifest but missing (deleted?)")
        elif hashlib.sha256(files[path]).hexdigest() != digest:
            problems.append(f"bundle {store.uri(path)} is not the file that was recorded (its sha256 changed)")
    for path in sorted(set(files) - set(recorded)):
        if audit.bundle_format(files[path]) != audit.BUNDLE_FORMAT:
            continue  # written before the ledger existed: history, verified on its own above
        writer = path.rsplit("/", 1)[-1].removesuffix(".json")
        problems.append(f"bundle {store.uri(path)} is not in the manifest: run {writer} wrote it and ended before "
                        f"recording it (the date's next run removes it), or it was added by hand")
    vouched: dict[str, set[str]] = defaultdict(set)
    for path in recorded:
        result = verified.get(path)
        if result is not None and result.ok:
            for event_id, version in result.row_hashes.items():
                vouched[event_id].add(version)
    unvouched = []
    for row in rows.to_dicts():
        content = audit.row_sha256(row)
        if content in vouched.get(row["event_id"], ()):
            continue
        stored = row.get(outbox.ROW_HASH)
        why = (f"its stored row_sha256 {stored[:12]} differs from its content's {content[:12]}: changed after it "
               "was written" if stored and stored != content else
               f"its content (row_sha256 {content[:12]}) is in no verifying bundle of the date")
        unvouched.append(f"case {row['event_id']}: {why}")
    problems += unvouched[:MAX_CASES_NAMED]
    if len(unvouched) > MAX_CASES_NAMED:
        problems.append(f"... and {len(unvouched) - MAX_CASES_NAMED} more cases no bundle vouches for")
    return problems


def verify_command(
    target: str,
    env: Mapping[str, str] | None = None,
    key_file: str | Path | None = None,
    out: TextIO | None = None,
    delta_root: str | None = None,
) -> int:
    """`llm-assets verify-audit PATH_OR_URI`: verify one bundle file, every bundle under a folder,
    or every bundle of an artifact root (a local folder or `s3://...`); with `delta_root`, also the
    manifest and the rows of every recorded date in scope (see the module docstring).

    The key is `AUDIT_SIGNING_KEY`, else the local key file (`key_file`, default the one the
    local default generated); verification never creates a key. Prints the verdict,
    partition, case count and covered event ids (first 20 and the count) for each bundle, then
    each date's verdict; returns 0 when all verify, 1 otherwise.
    """
    out = out or sys.stdout
    env = settings.environment() if env is None else env
    if key_file is None:
        key_file = settings.local_signing_key_file()
    try:
        signing_key = load_signing_key(env.get(SIGNING_KEY_VARIABLE), key_file, create=False)
    except MissingSigningKey as exc:
        print(f"FAILED: no signing key to verify with: {exc}", file=out)
        return 1
    try:
        store, prefix, is_root = _store_and_prefix(target)
        names = [n for n in store.list(prefix) if n == "" or n.endswith(".json")]
    except (ImportError, ValueError, OSError) as exc:  # unknown scheme, missing filesystem package, bad path
        print(f"FAILED: cannot open {target}: {exc}", file=out)
        return 1
    delta = DeltaLakeStorage(root=delta_root) if delta_root and is_root else None
    ledger = delta.read(ENRICHED_OUTBOX) if delta is not None and delta.exists(ENRICHED_OUTBOX) else None
    if not names and ledger is None:
        print(f"FAILED: no bundle files under {target}", file=out)
        return 1
    all_ok = True
    files: dict[str, bytes] = {}
    verified: dict[str, audit.VerificationResult] = {}
    for name in names:
        where = store.uri(name)
        try:
            files[name] = store.read_bytes(name)
            result = audit.verify_bundle(files[name], signing_key.key)
        except OSError as exc:
            result = audit.VerificationResult(ok=False, reason=f"cannot read {where}: {exc.strerror or exc}")
        verified[name] = result
        all_ok &= result.ok
        _print_bundle(result, where, out)
    if ledger is None:
        return 0 if all_ok else 1
    manifest = {day: paths for day, paths in outbox.bundles_by_day(ledger).items()
                if audit.bundle_folder(day).startswith(prefix) or prefix.startswith(audit.bundle_folder(day))}
    for day, recorded in sorted(manifest.items()):
        folder = audit.bundle_folder(day)
        rows = delta.read(ENRICHED_CASES, partition_column="event_date", partition_values=[day])
        problems = _partition_problems(store, day, recorded, {n: b for n, b in files.items()
                                                              if n.startswith(folder + "/")},
                                       verified, rows)
        all_ok &= not problems
        if problems:
            print(f"FAILED partition {day}:", file=out)
            for problem in problems:
                print(f"  {problem}", file=out)
        else:
            print(f"OK partition {day}: {len(recorded)} recorded bundle(s) present and unchanged, "
                  f"{rows.height} case(s) each vouched for by one", file=out)
    return 0 if all_ok else 1
