"""The sweep's HTML report: build.py's rankings and figures through a Jinja2 template
(harness/report/templates/report.html.j2), one self-contained page with every image inlined."""

from __future__ import annotations

import base64

import jinja2
import markupsafe

from harness.confirm import ALPHA, TEST_NAME
from harness.data.shapes import ATTRIBUTES
from harness.hyperparams import ALL_NAMES
from harness.phase import Phase, Source
from harness.report.final_scores import final_note, final_rows
from harness.report.fmt import fmt
from harness.report.importance import IMPORTANCE_METHOD, MIN_TRIALS_FOR_IMPORTANCE
from harness.report.markdown import extra_columns, screened_note
from harness.results import params_of

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def breakable(name: str) -> markupsafe.Markup:
    """A column name that may wrap after each underscore: a header like conditioning_last3_mean or stage1_parent is
    otherwise one unbreakable word, and a table of them runs past the page."""
    return markupsafe.Markup("_<wbr>").join(markupsafe.escape(part) for part in str(name).split("_"))


_ENV.filters["fmt"] = fmt
_ENV.filters["params_of"] = params_of
_ENV.filters["breakable"] = breakable


def _shown(entries_params: list[dict]) -> list[str]:
    """The parameter columns worth a column: those any row has, in the hyperparameters' order."""
    present = {k for p in entries_params for k in p}
    return [k for k in (*ALL_NAMES, "stage1_parent") if k in present]


def render_html(*, sweep, phase: Phase, record, ranked: list[dict], stage1_ranked: list[dict], confirmed: list,
                stage1_confirmed: list, importances: tuple[dict, int], cost: dict, paper: dict | None,
                best_grids: list[tuple[str, dict]], showcase: dict | None, images: dict[str, bytes], unit: str,
                final=None, vs_random_notes: dict[str, str] | None = None, run_ends=()) -> str:
    if showcase is not None:  # attributes in the judge's order, then anything else
        showcase = {**showcase, "rows": sorted(showcase["rows"], key=lambda r: (
            ATTRIBUTES.index(r["attribute"]) if r["attribute"] in ATTRIBUTES else len(ATTRIBUTES), r["attribute"]))}
    values, n_trials = importances
    return _ENV.get_template("report.html.j2").render(
        sweep=sweep, record=record, objective=sweep.objective, metric=sweep.objective.key, extra=extra_columns(sweep),
        final_epochs=phase.epochs(sweep, Source.CONFIRM), screened=lambda stages: screened_note(sweep, stages),
        phase_stages=phase.stages, confirmed=confirmed, stage1_confirmed=stage1_confirmed, ranked=ranked,
        stage1_ranked=stage1_ranked, shown_params=_shown, params_of=params_of, paper=paper, best_grids=best_grids,
        showcase=showcase, unit=unit, images={name: _data_uri(png) for name, png in images.items()}, cost=cost,
        importances=values, importance_trials=n_trials, min_importance_trials=MIN_TRIALS_FOR_IMPORTANCE,
        importance_method=IMPORTANCE_METHOD, alpha=ALPHA, test_name=TEST_NAME, final=final,
        final_note=final_note(final) if final else "",
        final_rows=final_rows(final, [c.config_id for c in confirmed]) if final else [],
        vs_random_notes={"final": "", "stage1": "", **(vs_random_notes or {})}, run_ends=run_ends,
    )
