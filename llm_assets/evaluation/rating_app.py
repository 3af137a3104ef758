"""The rating page: analysts rate sampled cases in a browser; ratings go to Kafka `cases.ratings`.

A small Starlette app with server-rendered HTML (Jinja2), served by uvicorn:

- `GET /` lists the samples (`evaluation/samples`) nobody has rated yet (`?day=YYYY-MM-DD` for one day);
- `GET /cases/{event_id}` shows the redacted case, the label and confidence, the summary and
  the proposed actions, with the rating form;
- `POST /cases/{event_id}` checks the form against the ratings contract (`RatingSubmission`)
  and publishes the rating (key = event_id) through `KafkaResource`; `evaluation/ratings`
  imports it on its next run.
- `GET|POST /login` takes an analyst token once and keeps a session cookie; `/logout` ends it.

Every page but `/login` and `/healthz` needs an authenticated analyst (`page_auth`: a token, or an
SSO proxy's identity header from a trusted address with its secret); without one: 401 and nothing
sent. The analyst of a rating is that identity, never a form field, and the rating records how it
was proven (`auth_method`). Forms carry a CSRF token; ratings are rate-limited per analyst.

A case counts as rated by an analyst once `evaluation/ratings` holds their rating of it, or once this
process sent one (the import runs later). A case one analyst disputed against a confident model
answer waits for a second analyst (`evaluation.trust.cases_in_review`): it stays listed, marked
"review", for everyone else. The page reads Delta and writes Kafka only: it never writes a table.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

import polars as pl
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from llm_assets import settings
from llm_assets.asset_keys import EVALUATION_RATINGS, EVALUATION_SAMPLES
from llm_assets.domain import current_pack
from llm_assets.evaluation import templates, trust
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.evaluation.page_auth import CSRF_FIELD, SESSION_COOKIE, Identity, PageAuth, Refused
from llm_assets.evaluation.ratings import RATINGS_SCHEMA, RatingSubmission, validation_reasons
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource

DEFAULT_PORT = 8765
LIST_LIMIT = 200


class RatingDesk:
    """What the page reads and writes: samples and ratings in Delta, new ratings to Kafka."""

    def __init__(self, delta: DeltaLakeStorage, kafka: KafkaResource, topic: str) -> None:
        self.delta, self.kafka, self.topic = delta, kafka, topic
        self._sent: set[tuple[str, str]] = set()  # (event_id, analyst) rated here, not imported yet
        self._lock = threading.Lock()

    def _ratings(self) -> pl.DataFrame:
        columns = ["event_id", "analyst", "label_correct", "rated_at"]
        if not self.delta.exists(EVALUATION_RATINGS):
            return pl.DataFrame(schema={c: RATINGS_SCHEMA[c] for c in columns})
        return self.delta.scan(EVALUATION_RATINGS).select(columns).collect()

    def unrated(self, analyst: str, day: str | None = None) -> tuple[list[dict], int]:
        """What `analyst` can rate, newest day first (at most `LIST_LIMIT`), and how many there are:
        samples nobody rated, and cases in review that they did not rate themselves (`review` = True)."""
        if not self.delta.exists(EVALUATION_SAMPLES):
            return [], 0
        scan = self.delta.scan(EVALUATION_SAMPLES)
        if day:
            scan = scan.filter(pl.col("event_date") == day)
        samples = scan.select("event_id", "event_date", "label", "confidence", "severity", "summary").collect()
        stored = self._ratings()
        with self._lock:
            sent = set(self._sent)
        rated = set(stored["event_id"].to_list()) | {e for e, _ in sent}
        mine = set(stored.filter(pl.col("analyst") == analyst)["event_id"].to_list()) | {
            e for e, a in sent if a == analyst}
        review = trust.cases_in_review(stored, samples) - mine
        waiting = samples.filter(~pl.col("event_id").is_in(list(rated)) | pl.col("event_id").is_in(list(review)))
        waiting = waiting.with_columns(pl.col("event_id").is_in(list(review)).alias("review"))
        waiting = waiting.sort(["review", "event_date", "event_id"], descending=[True, True, False])
        return waiting.head(LIST_LIMIT).to_dicts(), waiting.height

    def sample(self, event_id: str) -> dict | None:
        if not self.delta.exists(EVALUATION_SAMPLES):
            return None
        found = self.delta.scan(EVALUATION_SAMPLES).filter(pl.col("event_id") == event_id).collect()
        return found.row(0, named=True) if found.height else None

    def send(self, rating: RatingSubmission, sample: dict) -> None:
        """Publish one rating (idempotent producer; raises when the broker did not acknowledge it)."""
        value = rating.message(model_label=sample["label"], model_version=sample["model_version"],
                               event_date=sample["event_date"])
        self.kafka.produce_batch(self.topic, [(rating.event_id, value)], flush_timeout_s=15.0)
        with self._lock:
            self._sent.add((rating.event_id, rating.analyst))


def _actions(sample: dict) -> list[dict]:
    try:
        actions = json.loads(sample.get("actions") or "[]")
    except json.JSONDecodeError:
        return []
    return [a for a in actions if isinstance(a, dict) and a.get("action")]


def create_rating_app(delta: DeltaLakeStorage, kafka: KafkaResource, auth: PageAuth, *,
                      topic: str = settings.RATINGS_TOPIC) -> Starlette:
    """The rating page's ASGI app over these resources (initialized: no `EnvVar` left in them);
    `auth` says who each request comes from (there is no page without it)."""
    desk = RatingDesk(delta, kafka, topic)
    pages = Jinja2Templates(env=templates.environment())

    def login_page(request: Request, reason: str | None, status: int) -> Response:
        return pages.TemplateResponse(request, "login.html", {"reason": reason}, status_code=status)

    def refused(request: Request, exc: Refused) -> Response:
        if exc.status == 401 and "text/html" in request.headers.get("accept", ""):
            return login_page(request, exc.reason, 401)
        headers = {"Retry-After": "60"} if exc.status == 429 else None
        return PlainTextResponse(exc.reason, status_code=exc.status, headers=headers)

    def render_case(request: Request, who: Identity, sample: dict, form: dict, errors: list[str],
                    status: int = 200) -> Response:
        return pages.TemplateResponse(request, "case.html", {
            "s": sample, "actions": _actions(sample), "labels": current_pack().labels, "form": form, "errors": errors,
            "analyst": who.analyst, "csrf_field": CSRF_FIELD, "csrf": auth.csrf_token(who)}, status_code=status)

    async def list_samples(request: Request) -> Response:
        try:
            who = auth.identify(request)
        except Refused as exc:
            return refused(request, exc)
        day = request.query_params.get("day") or None
        samples, total = await run_in_threadpool(desk.unrated, who.analyst, day)
        return pages.TemplateResponse(request, "list.html", {
            "samples": samples, "total": total, "day": day, "rated": request.query_params.get("rated"),
            "error": None, "analyst": who.analyst})

    async def show_case(request: Request) -> Response:
        try:
            who = auth.identify(request)
        except Refused as exc:
            return refused(request, exc)
        sample = await run_in_threadpool(desk.sample, request.path_params["event_id"])
        if sample is None:
            return PlainTextResponse("no such sample", status_code=404)
        form = {"label_correct": "", "correct_label": "", "actions_accepted": []}
        return render_case(request, who, sample, form, [])

    async def rate_case(request: Request) -> Response:
        try:
            who = auth.identify(request)
            data = await request.form()
            auth.check_csrf(who, str(data.get(CSRF_FIELD) or "") or None)
            auth.take_slot(who)
        except Refused as exc:
            return refused(request, exc)
        event_id = request.path_params["event_id"]
        sample = await run_in_threadpool(desk.sample, event_id)
        if sample is None:
            return PlainTextResponse("no such sample", status_code=404)
        form: dict[str, Any] = {
            "label_correct": str(data.get("label_correct") or ""),
            "correct_label": str(data.get("correct_label") or ""),
            "actions_accepted": [str(v) for v in data.getlist("actions_accepted")]}
        if form["label_correct"] not in ("yes", "no"):
            return render_case(request, who, sample, form, ["say whether the label is correct"], status=400)
        try:
            rating = RatingSubmission.model_validate({
                **form, "event_id": event_id, "analyst": who.analyst, "auth_method": who.method,
                "label_correct": form["label_correct"] == "yes",
                # A correct label needs no other one, whatever the select still shows.
                "correct_label": form["correct_label"] if form["label_correct"] == "no" else None,
                "rated_at": datetime.now(timezone.utc)})
        except ValidationError as exc:
            return render_case(request, who, sample, form, list(validation_reasons(exc)), status=400)
        unknown = [a for a in rating.actions_accepted if a not in {x["action"] for x in _actions(sample)}]
        if unknown or (not rating.label_correct and rating.correct_label == sample["label"]):
            problem = (f"actions {unknown} were not proposed" if unknown
                       else "the right label you chose is the model's label: mark it correct instead")
            return render_case(request, who, sample, form, [problem], status=400)
        try:
            await run_in_threadpool(desk.send, rating, sample)
        except Exception as exc:  # the broker is down: say so, keep the form as filled
            return render_case(request, who, sample, form, [f"the rating was not sent ({exc}); try again"],
                               status=503)
        return RedirectResponse(f"/?rated={event_id}", status_code=303)

    async def login(request: Request) -> Response:
        if request.method == "POST":
            token = str((await request.form()).get("token") or "")
        else:
            token = request.query_params.get("token") or ""
        if not token:
            return login_page(request, None, 200)
        analyst = await run_in_threadpool(auth.registry.authenticate, token)
        if analyst is None:
            return login_page(request, "unknown or revoked token", 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=12 * 3600, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/", list_samples),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/cases/{event_id:path}", show_case, methods=["GET"]),
        Route("/cases/{event_id:path}", rate_case, methods=["POST"]),
        Route("/healthz", health),
    ])


def serve_rating_page(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, delta: DeltaLakeStorage | None = None,
                      kafka: KafkaResource | None = None, topic: str = settings.RATINGS_TOPIC,
                      log_level: str = "warning") -> None:
    """Serve the rating page with uvicorn until interrupted.

    Without `delta` / `kafka`, the resources of the current environment (`LLM_ASSETS_ENV`)
    are used, with their `EnvVar`s resolved from this process's environment.
    """
    import uvicorn

    from llm_assets.resources.environments import current_environment, resources_for

    bound = resources_for(current_environment())
    delta = delta or bound["delta"].process_config_and_initialize()
    kafka = kafka or bound["kafka"].process_config_and_initialize()
    registry = AnalystRegistry(bound["artifacts"].process_config_and_initialize())
    app = create_rating_app(delta, kafka, PageAuth.from_settings(registry), topic=topic)
    print(f"Rating page on http://{host}:{port} (ratings go to {topic} on {kafka.bootstrap_servers})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
