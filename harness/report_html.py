"""The sweep's HTML report: report.py's rankings and figures through a Jinja2 template
(harness/templates/report.html.j2), one self-contained page with every image inlined."""

from __future__ import annotations

import base64
import math

import jinja2

from harness.confirm import ALPHA, TEST_NAME, params_of
from harness.data.shapes import ATTRIBUTES
from harness.hyperparams import ALL_NAMES
from harness.importance import IMPORTANCE_METHOD, MIN_TRIALS_FOR_IMPORTANCE

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _fmt(value) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


_ENV.filters["fmt"] = _fmt
_ENV.filters["params_of"] = params_of


def _shown(entries_params: list[dict]) -> list[str]:
    """The parameter columns worth a column: those any row has, in the hyperparameters' order."""
    present = {k for p in entries_params for k in p}
    return [k for k in (*ALL_NAMES, "stage1_parent") if k in present]


def render_html(*, sweep, summary: dict, ranked: list[dict], stage1_ranked: list[dict], confirmed: list,
                stage1_confirmed: list, importances: tuple[dict, int], cost: dict, paper: dict | None,
                best_grids: list[tuple[str, dict]], showcase: dict | None, images: dict[str, bytes], unit: str) -> str:
    metric = sweep.search.objective
    extra = ["fidelity"] if sweep.data.kind == "shapes" else [m for m in ("fid", "inception_score") if m != metric]
    final_epochs = sweep.stage2.epochs if ranked and ranked[0].get("stage") == 2 else sweep.stage1.epochs
    if sweep.search.strategy == "joint":
        final_epochs = sweep.stage1.epochs + sweep.stage2.epochs
    if showcase is not None:  # attributes in the judge's order, then anything else
        showcase = {**showcase, "rows": sorted(showcase["rows"], key=lambda r: (
            ATTRIBUTES.index(r["attribute"]) if r["attribute"] in ATTRIBUTES else len(ATTRIBUTES), r["attribute"]))}
    values, n_trials = importances
    return _ENV.get_template("report.html.j2").render(
        sweep=sweep, summary=summary, metric=metric, mode=sweep.search.mode, extra=extra, final_epochs=final_epochs,
        confirmed=confirmed, stage1_confirmed=stage1_confirmed, ranked=ranked, stage1_ranked=stage1_ranked,
        shown_params=_shown, params_of=params_of, paper=paper, best_grids=best_grids, showcase=showcase, unit=unit,
        images={name: _data_uri(png) for name, png in images.items()}, cost=cost,
        importances=values, importance_trials=n_trials, min_importance_trials=MIN_TRIALS_FOR_IMPORTANCE,
        importance_method=IMPORTANCE_METHOD, alpha=ALPHA, test_name=TEST_NAME,
    )
