"""`evaluation/golden_cases`: the labelled cases every model version and every gate is judged on.

= the domain pack's seed file ∪ analysts' ratings (a rated sample becomes a labelled case with
the analyst's label), deduplicated (by `event_id`, then by text: the first one wins, the seed
first), versioned by a content hash (`golden_version`) and split deterministically:

- a seed row keeps the `split` its file gives it, else a hash of its `event_id` decides
  (`held_out_percent` of them go to `held_out`);
- a rated case joins the golden set only when a hash of its `event_id` falls in
  `rating_share_percent` (the others keep teaching the gate), and then it is split the same way.
  Its label is the analysts' verdict (`evaluation.trust`): quarantined analysts' ratings count for
  nothing, a single analyst's dispute of the model waits for review, and no one analyst supplies more
  than `max_analyst_share` of the golden set (the guard must not be one person's opinion).

Nothing trains on a golden case: `golden_ids` is what `models/embedding_gate` and
`models/gate_training_examples` leave out (tests assert it). `models/evaluation` reads the
`evaluation` split, the gate's guard the `held_out` split (declared dependencies: the lineage
shows them).
"""

import hashlib

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets.asset_keys import EVALUATION_GOLDEN_CASES, EVALUATION_RATINGS
from llm_assets.evaluation import trust
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.evaluation.assets import RATINGS_IMPORT_CRON
from llm_assets.domain import current_pack
from llm_assets.domain.golden import LabelledFileError, read_labelled
from llm_assets.metadata import markdown_table
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage

GOLDEN_SCHEMA = {"event_id": pl.String, "payload_raw": pl.String, "partner_id": pl.String,
                 "source_system": pl.String, "label": pl.String, "split": pl.String, "origin": pl.String,
                 "analyst": pl.String}
DEFAULT_HELD_OUT_PERCENT = 30
DEFAULT_RATING_SHARE_PERCENT = 50
DEFAULT_MAX_ANALYST_SHARE = 0.25


def bucket(event_id: str, salt: str) -> int:
    """0..99 from a hash of `event_id` (salted per decision): the same case always lands the same way."""
    return int(hashlib.sha256(f"{salt}\x1f{event_id}".encode()).hexdigest()[:8], 16) % 100


def _normalized(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def rated_cases(ratings: pl.DataFrame, rating_share_percent: int, *, released: dict | None = None,
                seed_cases: int = 0, max_analyst_share: float = DEFAULT_MAX_ANALYST_SHARE) -> pl.DataFrame:
    """Rated cases as labelled cases (the analysts' verdict), for the share of cases the hash gives the
    golden set, at most `max_analyst_share` of the whole set (with `seed_cases`) from any one analyst."""
    needed = {"event_id", "label", "text", "rated_at", "analyst", "model_label"}
    if ratings.is_empty() or not needed <= set(ratings.columns):
        return pl.DataFrame(schema=GOLDEN_SCHEMA)
    usable = trust.trusted(ratings.filter(pl.col("label").is_not_null() & pl.col("text").is_not_null()), released)
    verdicts, _ = trust.decided_labels(usable, {})
    if not verdicts:
        return pl.DataFrame(schema=GOLDEN_SCHEMA)
    texts = dict(usable.sort("rated_at").unique("event_id", keep="last").select("event_id", "text").iter_rows())
    picked = sorted((bucket(e, "rating"), e) for e in verdicts if bucket(e, "rating") < rating_share_percent)
    limit = max(1, int(max_analyst_share * (seed_cases + len(picked))))
    per_analyst: dict[str, int] = {}
    rows = []
    for _, event_id in picked:
        analyst = verdicts[event_id]["analyst"]
        if per_analyst.get(analyst, 0) >= limit:
            continue
        per_analyst[analyst] = per_analyst.get(analyst, 0) + 1
        rows.append({"event_id": event_id, "text": texts[event_id], "label": verdicts[event_id]["label"],
                     "analyst": analyst})
    chosen = pl.DataFrame(rows, schema={"event_id": pl.String, "text": pl.String, "label": pl.String,
                                        "analyst": pl.String})
    return chosen.select(
        "event_id", pl.col("text").alias("payload_raw"), pl.lit("").alias("partner_id"),
        pl.lit("").alias("source_system"), "label", pl.lit(None, dtype=pl.String).alias("split"),
        pl.lit("rating").alias("origin"),
        "analyst",
    ).cast(GOLDEN_SCHEMA)


def build_golden(seed: pl.DataFrame, rated: pl.DataFrame, *, held_out_percent: int) -> pl.DataFrame:
    """Seed ∪ rated cases, deduplicated, each with its split (see the module docstring), by `event_id`."""
    seed_rows = seed.select(*[c for c in ("event_id", "payload_raw", "partner_id", "source_system", "label", "split")],
                            pl.lit("seed").alias("origin"), pl.lit(None, dtype=pl.String).alias("analyst")
                            ).cast(GOLDEN_SCHEMA)
    both = pl.concat([seed_rows, rated.cast(GOLDEN_SCHEMA)], how="vertical")
    both = both.unique("event_id", keep="first", maintain_order=True)
    both = both.with_columns(_normalized(pl.col("payload_raw")).alias("_text")).unique(
        "_text", keep="first", maintain_order=True).drop("_text")
    split = pl.col("event_id").map_elements(
        lambda e: "held_out" if bucket(e, "split") < held_out_percent else "evaluation", return_dtype=pl.String)
    return both.with_columns(pl.coalesce(pl.col("split"), split).alias("split")).sort("event_id")


def golden_version(frame: pl.DataFrame) -> str:
    """sha256 of the cases, their labels and splits: two evaluations are comparable when it matches."""
    digest = hashlib.sha256()
    for event_id, text, label, split in frame.select("event_id", "payload_raw", "label", "split").sort(
            "event_id").iter_rows():
        digest.update(f"{event_id}\x1f{text}\x1f{label}\x1f{split}\x1e".encode())
    return digest.hexdigest()


def seed_golden() -> pl.DataFrame:
    """What the asset writes before any rating: the domain pack's seed file, split by the defaults."""
    pack = current_pack()
    try:
        seed = read_labelled(pack, pack.spec.sources.golden)
    except LabelledFileError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return build_golden(seed, pl.DataFrame(schema=GOLDEN_SCHEMA), held_out_percent=DEFAULT_HELD_OUT_PERCENT)


def read_golden(delta: DeltaLakeStorage, split: str | None = None) -> pl.DataFrame:
    """The golden cases (one split, or all): the materialized table; before its first materialization,
    what it would hold without ratings (`seed_golden`)."""
    frame = delta.read(EVALUATION_GOLDEN_CASES) if delta.exists(EVALUATION_GOLDEN_CASES) else seed_golden()
    return (frame.filter(pl.col("split") == split) if split else frame).sort("event_id")


def golden_ids(delta: DeltaLakeStorage) -> set[str]:
    """Every golden `event_id`: what nothing may train on (empty before the first materialization)."""
    if not delta.exists(EVALUATION_GOLDEN_CASES):
        return set()
    return set(delta.scan(EVALUATION_GOLDEN_CASES).select("event_id").collect()["event_id"].to_list())


class GoldenCasesConfig(dg.Config):
    held_out_percent: int = Field(default=DEFAULT_HELD_OUT_PERCENT, ge=0, le=100,
                                  description="share of cases without a split of their own that go to held_out")
    rating_share_percent: int = Field(default=DEFAULT_RATING_SHARE_PERCENT, ge=0, le=100,
                                      description="share of rated cases (by a hash of event_id) that join the "
                                                  "golden set; the others keep teaching the gate")
    max_analyst_share: float = Field(default=DEFAULT_MAX_ANALYST_SHARE, gt=0, le=1,
                                     description="the most of the golden set one analyst's ratings may supply")


@dg.asset(key=EVALUATION_GOLDEN_CASES, group_name="evaluation", kinds={"delta", "polars"},
          # Reads evaluation/ratings without declaring it: ratings rate enriched cases, which the gate decides,
          # and the gate is judged on these cases (a declared edge would close a cycle). It follows the
          # ratings import's schedule instead, and records a new version only when the cases changed.
          automation_condition=(dg.AutomationCondition.missing()
                                | dg.AutomationCondition.cron_tick_passed(RATINGS_IMPORT_CRON))
          & ~dg.AutomationCondition.in_progress(),
          output_required=False)
def evaluation_golden_cases(context: dg.AssetExecutionContext, config: GoldenCasesConfig,
                            delta: DeltaLakeStorage, artifacts: ArtifactStore):
    """The golden labelled cases: the domain pack's seed file ∪ a hashed share of analysts' ratings,
    deduplicated, versioned by content hash and split into `evaluation` (what `models/evaluation`
    scores every model version on) and `held_out` (what the gate's guard judges a retrained gate on).
    Nothing trains on them."""
    pack = current_pack()
    try:
        seed = read_labelled(pack, pack.spec.sources.golden)
    except LabelledFileError as exc:
        raise dg.Failure(description=str(exc)) from exc
    ratings = delta.read(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else pl.DataFrame()
    rated = rated_cases(ratings, config.rating_share_percent, released=AnalystRegistry(artifacts).released(),
                        seed_cases=seed.height, max_analyst_share=config.max_analyst_share)
    golden = build_golden(seed, rated, held_out_percent=config.held_out_percent)
    version = golden_version(golden)
    previous = context.instance.get_latest_materialization_event(EVALUATION_GOLDEN_CASES)
    recorded = previous.asset_materialization.metadata.get("golden_version") if previous else None
    if recorded is not None and recorded.value == version and delta.exists(EVALUATION_GOLDEN_CASES):
        context.log.info(f"evaluation/golden_cases unchanged ({version[:12]}): nothing recorded")
        return
    delta.overwrite(EVALUATION_GOLDEN_CASES, golden)
    counts = golden.group_by("split", "origin").len().sort("split", "origin")
    per_label = golden.group_by("label", "split").len().pivot(on="split", index="label", values="len").fill_null(0)
    context.log.info(f"evaluation/golden_cases: {golden.height} cases ({version[:12]}), "
                     f"{golden.filter(pl.col('origin') == 'rating').height} from ratings")
    yield dg.MaterializeResult(data_version=dg.DataVersion(version[:16]), metadata={
        "dagster/row_count": golden.height,
        "golden_version": version,
        "domain_pack": pack.version,
        "seed_file": dg.MetadataValue.path(str(pack.resolve(pack.spec.sources.golden))),
        "evaluation_cases": golden.filter(pl.col("split") == "evaluation").height,
        "held_out_cases": golden.filter(pl.col("split") == "held_out").height,
        "from_ratings": golden.filter(pl.col("origin") == "rating").height,
        "by_split_and_origin": markdown_table(["split", "origin", "cases"], counts.rows()),
        "per_label": markdown_table(per_label.columns, per_label.sort("label").rows()),
        "table_uri": delta.uri(EVALUATION_GOLDEN_CASES),
    })
