"""What a worst case is worth: convergence of the check rounds, per-epsilon accuracies and the audit's checks."""

from __future__ import annotations

from typing import Any, Callable, Optional

from scipy.special import gammaincinv

from .results import Check, EpsResult


def next_round_bound(later: list[int], level: float = 0.95) -> float:
    """What one more round like the later check rounds would break, at most (``level`` upper bound): the rounds after
    the first re-run the same attacks with new seeds, so their breaks are taken as Poisson draws of one rate; with K
    breaks in n rounds, lambda_u = P^{-1}(K + 1, level) / n, the exact Poisson upper limit (Garwood, 1936; P^{-1}
    the inverse regularised lower incomplete gamma function). K = 0, n = 2: 1.5 samples."""
    return float(gammaincinv(sum(later) + 1, level)) / len(later)


def confidence(tier: int, rounds: list[int], tolerance: float = 0.0, after: Optional[list[int]] = None) -> dict:
    """How settled a worst case is. The first check round re-runs the tier at a larger budget; the later ones re-run
    its productive attacks with new seeds. ``bound``: the 95 % upper bound on what one more later round would break
    (``next_round_bound``); converged when it is at most ``tolerance`` samples (the budget's ``tolerance`` times the
    samples evaluated) after at least two later rounds (one empty round is weak evidence: K = 0, n = 1 gives 3).
    Without a later round the bound is the most any round broke (the tier's, when none ran).
    ``after``: what rounds run past the stop broke (``AdaptiveBudget.verify_rounds``, to check the rule)."""
    counts = [tier] + rounds
    last = max((r for r, c in enumerate(counts) if c), default=0)
    later = rounds[1:]
    bound = next_round_bound(later) if later else float(max(rounds) if rounds else tier)
    return {
        "converged": len(later) >= 2 and bound <= tolerance,
        "rounds_run": len(rounds),
        "last_productive_round": last,
        "last_productive_breaks": counts[last],
        "bound": round(bound, 2),
        "tolerance": round(tolerance, 2),
        "rounds_after_stop": list(after or []),
    }


def confidence_statement(eps: str, worst: float, conf: Optional[dict], total: int) -> str:
    """One line per epsilon: the worst case, whether it converged, and what another round would still break."""
    head = f"eps={eps}: worst case {100 * worst:.1f} %"
    if not conf:
        return head + " (no adaptive tier: an upper bound)"
    if "tolerance" not in conf:  # an attacks.json of the earlier rule: two consecutive empty rounds
        return f"{head}; {'converged' if conf['converged'] else 'NOT converged'} (two consecutive empty rounds)"
    points = lambda n: f"{100 * n / max(total, 1):.1f} points"
    bound, tol, n = conf["bound"], conf["tolerance"], conf["rounds_run"]
    after = conf.get("rounds_after_stop") or []
    checked = f"; {len(after)} round(s) past the stop broke {', '.join(map(str, after))}" if after else ""
    if n < 3:
        return (
            f"{head}; NOT shown converged: {n} check round(s), and two rounds after the first are needed to bound "
            f"the next one (up to {bound:g} sample(s), {points(bound)} lower){checked}"
        )
    what = (
        f"another round would break at most {bound:g} sample(s) ({points(bound)}; 95 % Poisson bound from what the "
        f"{n - 1} round(s) after the first broke)"
    )
    if conf["converged"]:
        return f"{head}; converged: {what}, within the tolerance of {tol:g} sample(s){checked}"
    return f"{head}; NOT converged after {n} check round(s): {what}, above the tolerance of {tol:g}{checked}"


def summarize(local: dict[str, Any], total: int, clean: int) -> dict[str, EpsResult]:
    """Accuracies per epsilon from an ``Evaluator.run`` result (counts already summed over ranks)."""
    per_eps = {}
    for eps, r in local["eps"].items():
        worst, paper_all = r["robust_worst"] / total, r["robust_paper_all"] / total
        per_eps[eps] = EpsResult(
            worst=worst,
            paper_all=paper_all,
            paper={k: v / total for k, v in r["robust_paper"].items()},
            overestimate_points=100 * (paper_all - worst),
            broken_by_phase=r["broken_by_phase"],
            top_k=r["top_k"],
            check_rounds=r["check_rounds"],
            confidence=r.get("confidence"),
        )
    return per_eps


def audit(
    per_eps: dict[str, EpsResult],
    total: int,
    zero_grads: int,
    big: Optional[tuple[float, float]],
    num_classes: int,
    margin_points: float = 2.0,
) -> list[Check]:
    """Checks whose failure casts doubt on the numbers: masked gradients, non-monotone accuracy, no collapse at a
    huge epsilon, the paper's protocol overestimating the worst case by more than ``margin_points``, an adaptive
    tier that had not converged (another round would break more than the tolerance), Square or transfer beating the
    white-box attacks.
    ``zero_grads``: samples whose input gradient is zero under every gradient path (see ``dead_paths`` for each
    path)."""
    tol = 1  # samples: a random start may flip one borderline sample
    checks: list[Check] = []

    def check(name: str, passed: bool, detail: str, rule: str = "", eps: str = "") -> None:
        checks.append(Check(name, bool(passed), detail, rule or name, eps, (rule or name) in FINDINGS))

    check(
        "non-zero input gradients under the ensemble",
        zero_grads == 0,
        f"{zero_grads} of {total} samples have an all-zero input gradient under every gradient path",
    )
    labels = list(next(iter(per_eps.values())).paper) if per_eps else []
    for label in labels:
        accs = [v.paper[label] for v in per_eps.values()]
        check(
            f"{label}: accuracy non-increasing in epsilon",
            all(b <= a + tol / total for a, b in zip(accs, accs[1:])),
            " >= ".join(f"{a:.3f}" for a in accs),
        )
    if big is not None:
        limit = max(0.1, 1.5 / max(1, num_classes))
        check(
            f"white-box accuracy near 0 at eps={big[0]:g}", big[1] <= limit, f"PGD-20: {big[1]:.3f} (limit {limit:.3f})"
        )
    for eps, v in per_eps.items():
        _per_eps_checks(check, eps, v, margin_points, tol)
    return checks


def _per_eps_checks(check: Callable, eps: str, v: EpsResult, margin_points: float, tol: int) -> None:
    """One epsilon's checks: the paper's protocol against the worst case, convergence, Square and transfer."""
    over = v.overestimate_points
    check(
        f"eps={eps}: the paper's protocol is within {margin_points:g} points of the worst case",
        over <= margin_points + 1e-9,
        f"paper protocol {100 * v.paper_all:.1f} % vs worst case "
        f"{100 * v.worst:.1f} %: the protocol overestimates robustness by {over:.1f} points",
        "paper protocol overestimates",
        eps,
    )
    phases = v.broken_by_phase
    if v.check_rounds:
        r = v.check_rounds
        check(
            f"eps={eps}: adaptive attack converged (another round would break at most the tolerance)",
            v.confidence["converged"],
            "samples broken by each check round: "
            + ", ".join(map(str, r))
            + (
                f"; next round's 95 % bound {v.confidence['bound']:g}, tolerance {v.confidence['tolerance']:g}"
                if "tolerance" in v.confidence
                else ""
            ),
            "attack not converged",
            eps,
        )
    after = (v.confidence or {}).get("rounds_after_stop")
    if after:
        bound = v.confidence["bound"]
        check(
            f"eps={eps}: the rounds past the stop broke at most the rule's bound per round",
            sum(after) <= bound * len(after) + 1e-9,
            f"{len(after)} round(s) past the stop broke {', '.join(map(str, after))}; bound {bound:g} per round",
            "convergence rule exceeded",
            eps,
        )
    for key, what in (("square", "Square (black-box)"), ("transfer", "transfer")):
        if key in phases:
            check(
                f"eps={eps}: {what} never beats the white-box attacks",
                phases[key] <= tol,
                f"{what} broke {phases[key]} sample(s) that every white-box attack left robust",
                f"{key} beat white-box",
                eps,
            )


FINDINGS = ("paper protocol overestimates",)  # what the evaluation found about the paper's protocol, not a doubt


def verdict(check: Check) -> str:
    """``PASS``, ``FINDING`` (a failed check that is a result, e.g. the paper's protocol overestimating robustness: the
    reason the worst case exists) or ``FAIL`` (the evaluation itself is in doubt)."""
    if check.passed:
        return "PASS"
    return "FINDING" if check.finding or check.rule in FINDINGS else "FAIL"


def dead_paths(zero_by_path: dict[str, int], total: int) -> list[str]:
    """Notes on gradient paths with an all-zero input gradient on most samples: dead weight in the ensemble (they
    break nothing and hide nothing; the ensemble's verdict rests on the other paths)."""
    return [
        f"gradient path {name} gives an all-zero input gradient on {z} of {total} samples: dead weight in the ensemble"
        for name, z in zero_by_path.items()
        if 2 * z > total
    ]
