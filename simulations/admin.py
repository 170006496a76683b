"""Admin for simulations. ``/admin/simulations/`` starts runs and lists them with
live progress; each run's page (the Run admin's change view) shows its results.
Runs change only through the services: here, as in the API, a start is
``run_launch``, and nothing of a run can be edited.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.contrib.admin.helpers import AdminForm
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse, QueryDict
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from oo_ml.errors import DomainError, error_body
from oo_ml.permissions import RUN_START, RUN_VIEW, staff_may
from policies.admin import ReadOnlyAdmin
from policies.models import Role
from policies.selectors import policy_list
from simulations import charts, selectors, services
from simulations.forms import RunStartForm
from simulations.models import JudgeAnswer, Run, RunStatus
from simulations.personas import PERSONAS
from simulations.selectors import AGE_LABELS

RUNS_PER_PAGE = 20
MAX_POLLED = 100
LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
START_FIELDSETS = [
    (
        None,
        {
            "fields": [
                "policies",
                ("judge", "seed"),
                ("n_users", "n_rounds"),
                ("n_candidates", "chunk_users"),
            ]
        },
    )
]
SMOOTHING = (1, 5, 10, 25, 50, 100)
REACTIONS = ("done", "snoozed", "dismissed")


def _can_view(request: HttpRequest) -> bool:
    return staff_may(request.user, RUN_VIEW)


def _can_start(request: HttpRequest) -> bool:
    return staff_may(request.user, RUN_START)


# --- what a row of the list, the JSON poll and the run page show --------------


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _best(results: list[dict] | None) -> dict | None:
    """The policy with the highest mean reward (the first on a tie)."""
    if not results:
        return None
    best = max(results, key=lambda r: r["mean_reward"])
    return {"policy": best["policy"], "mean_reward": best["mean_reward"]}


def run_progress(run: Run, *, results: list[dict] | None = None) -> dict:
    """A run's state as the list shows it and the page's script updates it."""
    if results is None:
        results = getattr(run, "results", None)
    return {
        "id": str(run.pk),
        "status": run.status,
        "status_label": run.get_status_display(),
        "live": run.status in LIVE,
        "chunks_done": run.chunks_done,
        "chunks_total": run.chunks_total,
        "percent": round(100 * selectors.run_fraction(run), 1),
        "duration": duration_text(selectors.run_duration(run)),
        "best": _best(results) if run.status == RunStatus.FINISHED else None,
        "error": run.error,
        "url": reverse("admin:simulations_run_change", args=[run.pk]),
    }


# --- /admin/simulations/: start a run, and every run -------------------------


def _initial(query: QueryDict) -> dict:
    """The form's initial values: a run's ("run again" links here with them),
    else the active policy beside every shadow."""
    if "policies" in query:
        initial = {name: query.get(name) for name in RunStartForm.base_fields}
        initial["policies"] = query.getlist("policies")
        return {k: v for k, v in initial.items() if v not in (None, "")}
    return {"policies": [p.name for p in policy_list() if p.role != Role.RETIRED]}


def _form_error(form: RunStartForm, error: DomainError) -> None:
    """A service's complaint on the field it names, in the form's words."""
    field = error.field if error.field in form.fields else None
    detail = error.detail
    if field and detail.startswith(f"{field} "):  # the label, not the API's name
        detail = f"{form[field].label}{detail[len(field) :]}"
    form.add_error(field, detail)


def _start(request: HttpRequest, form: RunStartForm) -> Run | None:
    """The API's start (``run_launch``), once every parameter passes the
    service's checks; else every problem goes back on the field it names,
    beside those of the fields the form could not read."""
    arguments = {k: v for k, v in form.cleaned_data.items() if v is not None}
    _, problems = services.run_parameters(arguments)
    if not problems and form.is_valid():
        try:
            run, _ = services.run_launch(**arguments, actor=request.user)
            return run
        except DomainError as error:
            problems = [error]
    for problem in problems:
        _form_error(form, problem)
    return None


def _typed(form: RunStartForm) -> str:
    """The form's values as the query that fills it again (``_initial``)."""
    query = QueryDict(mutable=True)
    query.setlist("policies", form.cleaned_data["policies"])
    for name, value in form.cleaned_data.items():
        if name != "policies" and value is not None:
            query[name] = str(value)
    return query.urlencode()


def simulations_home(request: HttpRequest) -> TemplateResponse | HttpResponseRedirect:
    """The simulations app's admin index: the start form and the runs."""
    if not _can_view(request):
        raise PermissionDenied
    can_start = _can_start(request)
    if request.method == "POST":
        if not can_start:
            raise PermissionDenied
        form = RunStartForm(request.POST)
        form.is_valid()  # reads what it can; _start checks the rest
        run = _start(request, form)
        if run is not None:
            messages.success(
                request,
                format_html(
                    '<a href="{}">{}</a> started: {} chunk{} queued for the workers.',
                    reverse("admin:simulations_run_change", args=[run.pk]),
                    " vs ".join(run.policies),
                    run.chunks_total,
                    "" if run.chunks_total == 1 else "s",
                ),
            )
            # Back to the form as it was typed, for the next run.
            return HttpResponseRedirect(f"{reverse('simulations-home')}?{_typed(form)}")
    else:
        form = RunStartForm(initial=_initial(request.GET))
    page = Paginator(selectors.run_list(), RUNS_PER_PAGE).get_page(request.GET.get("p"))
    context = {
        **admin.site.each_context(request),
        "title": "Simulations",
        "form": form,
        "adminform": AdminForm(form, START_FIELDSETS, {}),
        "can_start": can_start,
        "page": page,
        "rows": [(run, run_progress(run)) for run in page],
        "app_label": "simulations",
    }
    return TemplateResponse(request, "admin/simulations/index.html", context)


# --- a run's page ------------------------------------------------------------


def _window(request: HttpRequest, rounds: int) -> int:
    try:
        window = int(request.GET.get("smooth", ""))
    except ValueError:
        return charts.default_window(rounds)
    return min(max(window, 1), max(rounds, 1))


def _policy_rows(run: Run, chart: charts.Chart) -> list[dict]:
    results = run.summary["policies"]
    best = _best(results)
    specs = {s["name"]: s for s in run.policy_specs}
    lines = {s.name: s for s in chart.series}
    return [
        {
            **row,
            "spec": specs.get(row["policy"]),
            "line": lines.get(row["policy"]),
            "best": best is not None and row["policy"] == best["policy"],
            "exploration_rate": row["explorations"] / row["pulls"]
            if row["pulls"]
            else 0.0,
        }
        for row in results
    ]


def _persona_rows(run: Run) -> list[dict]:
    cells = {(c["persona"], c["policy"]): c for c in run.summary["personas"]}
    winners = {w["persona"]: w for w in run.summary["winners"]}
    rows = []
    for persona in PERSONAS:
        if persona.name not in winners:
            continue  # fewer users than personas
        winner = winners[persona.name]["policy"]
        rows.append(
            {
                "persona": persona,
                "winner": winner,
                "cells": [
                    {
                        "policy": name,
                        "cell": cells.get((persona.name, name)),
                        "won": name == winner,
                    }
                    for name in run.policies
                ],
            }
        )
    return rows


def _share(count: int, total: int) -> dict:
    return {"count": count, "percent": 100 * count / total if total else 0.0}


def _short_age(label: str) -> str:
    return label.replace(" days", " d").replace(" day", " d")


def _pick_groups(run: Run) -> tuple[list[dict], list[dict]]:
    """What each policy picked, as shares of its picks, in column groups."""
    picks = run.summary["picks"]
    ages = AGE_LABELS
    reactions = [
        k for k in REACTIONS if any(k in p["reaction"] for p in picks.values())
    ]
    reactions += sorted(
        {k for p in picks.values() for k in p["reaction"]} - set(reactions)
    )
    groups = [
        ("Priority", "priority", [(f"P{k}", str(k)) for k in range(1, 5)]),
        ("Overdue", "overdue", [("overdue", "overdue")]),
        ("Task age", "age", [(_short_age(k), k) for k in ages]),
        ("Reaction", "reaction", [(k, k) for k in reactions]),
    ]
    header = [
        {"title": t, "columns": [label for label, _ in cols]} for t, _, cols in groups
    ]
    rows = []
    for name in run.policies:
        kinds = picks[name]
        total = sum(kinds["priority"].values())
        cells = [
            {**_share(kinds[key].get(k, 0), total), "group_start": i == 0}
            for _, key, cols in groups
            for i, (_, k) in enumerate(cols)
        ]
        rows.append({"policy": name, "cells": cells})
    return header, rows


def run_page_context(request: HttpRequest, run: Run) -> dict:
    progress = run_progress(run, results=(run.summary or {}).get("policies"))
    seconds = selectors.run_duration(run)
    context = {
        "run": run,
        "progress": progress,
        "specs": run.policy_specs,
        "rerun": _rerun_query(run),
        "decisions_per_second": run.decisions / seconds
        if seconds and run.status == RunStatus.FINISHED
        else None,
        "chunks": list(run.chunks.all()),
    }
    if run.status == RunStatus.FINISHED and run.summary:
        window = _window(request, run.n_rounds)
        # The run's order, not the stored JSON's (PostgreSQL sorts its keys).
        curve = {name: run.summary["curve"][name] for name in run.policies}
        chart = charts.reward_chart(curve, window=window)
        regret = run.summary.get("regret_curve")
        regret_chart = None
        if regret:
            regret_chart = charts.reward_chart(
                {name: regret[name] for name in run.policies},
                window=window,
                y_label="Regret",
                key="regret",
            )
        header, rows = _pick_groups(run)
        context.update(
            chart=chart,
            regret_chart=regret_chart,
            oracle_mean=run.summary.get("oracle_mean"),
            first_policy=run.policies[0],
            smoothing=sorted(
                {w for w in SMOOTHING if w <= run.n_rounds}
                | {charts.default_window(run.n_rounds)}
            ),
            policy_rows=_policy_rows(run, chart),
            persona_rows=_persona_rows(run),
            pick_header=header,
            pick_rows=rows,
        )
    return context


def _rerun_query(run: Run) -> str:
    query = QueryDict(mutable=True)
    query.setlist("policies", run.policies)
    for name in ("judge", "n_users", "n_rounds", "seed", "n_candidates", "chunk_users"):
        query[name] = str(getattr(run, name))
    return query.urlencode()


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    """Runs, read-only: started from /admin/simulations/ or the API."""

    list_display = (
        "run",
        "status",
        "progress",
        "judge",
        "users",
        "rounds",
        "seed",
        "started_by",
        "created_at",
    )
    list_filter = ("status", "judge")
    search_fields = ("created_by_name", "policies")
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).defer("summary", "policy_specs")

    def get_search_results(self, request, queryset, search_term):
        """A run's id finds it too."""
        queryset, duplicates = super().get_search_results(
            request, queryset, search_term
        )
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return queryset, duplicates
        return queryset | self.model.objects.filter(pk=run_id), duplicates

    @admin.display(description="Run", ordering="created_at")
    def run(self, run: Run) -> str:
        return " vs ".join(run.policies)

    @admin.display(description="Chunks")
    def progress(self, run: Run) -> str:
        return f"{run.chunks_done} / {run.chunks_total}"

    @admin.display(description="Users", ordering="n_users")
    def users(self, run: Run) -> str:
        return f"{run.n_users:,}"

    @admin.display(description="Rounds", ordering="n_rounds")
    def rounds(self, run: Run) -> str:
        return f"{run.n_rounds:,}"

    @admin.display(description="Started by", ordering="created_by_name")
    def started_by(self, run: Run) -> str:
        return run.created_by_name

    def get_urls(self):
        poll = self.admin_site.admin_view(self.progress_view)
        return [
            path("progress/", poll, name="simulations_run_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest) -> JsonResponse:
        """The list's and the run page's poll: ``?id=…&id=…`` → their progress."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        raw = request.GET.getlist("id")
        if len(raw) > MAX_POLLED:
            return JsonResponse(
                error_body("invalid", f"At most {MAX_POLLED} runs at a time.", "id"),
                status=400,
            )
        try:
            ids = [uuid.UUID(value) for value in raw]
        except ValueError:
            return JsonResponse(
                error_body("invalid", "Every id must be a run id.", "id"), status=400
            )
        runs = selectors.runs_by_id(ids=ids)
        # admin_view marks it never cached: every poll reads the database.
        return JsonResponse({"runs": [run_progress(run) for run in runs]})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The run's page: parameters, progress, and its results once finished.
        Nothing on it is a form: other methods than reading are refused."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            **run_page_context(request, run),
            "title": " vs ".join(run.policies),
            "subtitle": f"Run {run.pk}",
            "opts": self.opts,
            "can_start": _can_start(request),
        }
        return TemplateResponse(request, "admin/simulations/run/page.html", context)


@admin.register(JudgeAnswer)
class JudgeAnswerAdmin(ReadOnlyAdmin):
    """The llm judge's cache, read-only: what the model said to each prompt."""

    list_display = ("created_at", "model", "prompt_version", "answer")
    list_filter = ("model", "prompt_version")
    search_fields = ("=key",)
    readonly_fields = ("key", "model", "prompt_version", "messages", "answer")
