"""The final evaluation's table (harness/final_eval.py), the same for the Markdown and the HTML report:
one row per confirmed config (means over its seed runs), then the paper's published figures."""

from __future__ import annotations

import numpy as np

from harness.final_eval import FinalEvaluation


def final_rows(final: FinalEvaluation, order: list[str]) -> list[dict]:
    """Rows for the configs in ``order`` (the confirmed ranking), then any other config scored, then the paper's."""
    by_config = final.by_config()
    ids = [c for c in order if c in by_config] + [c for c in by_config if c not in order]
    rows = []
    for cid in ids:
        runs = by_config[cid]
        rows.append({"name": cid, "runs": len(runs),
                     "fid": float(np.mean([r.fid for r in runs])),
                     "fid_per_seed": [r.fid for r in runs],
                     "kid": float(np.mean([r.kid for r in runs])),
                     "kid_std": float(np.mean([r.kid_std for r in runs])),
                     "inception_score": float(np.mean([r.inception_score for r in runs])),
                     "inception_score_std": float(np.mean([r.inception_score_std for r in runs])),
                     "seconds": sum(r.seconds for r in runs)})
    p = final.published
    rows.append({"name": f"published: {p.source}", "runs": None, "fid": p.fid, "fid_per_seed": [], "kid": None,
                 "kid_std": None, "inception_score": p.inception_score, "inception_score_std": p.inception_score_sd,
                 "seconds": None})
    return rows


def final_note(final: FinalEvaluation) -> str:
    """The protocol in one paragraph, and whether the figures may stand beside the paper's."""
    verdict = ("These scores follow the papers' protocol and may be compared with the published ones."
               if final.comparable else
               "Not comparable with the published figures: "
               + ("the network is not the standard FID Inception" if not final.standard_network
                  else f"{final.samples:,} samples, where the papers score about 30,000 (FID is biased upward at "
                       f"small sample sizes)") + ".")
    return f"Protocol: {final.protocol}. {verdict}"
