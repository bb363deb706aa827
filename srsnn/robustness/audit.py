"""What a worst case is worth: convergence of the check rounds, per-epsilon accuracies and the audit's checks."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .results import Check, EpsResult


def confidence(tier: int, rounds: list[int]) -> dict[str, Any]:
    """How settled a worst case is: converged when two consecutive check rounds broke nothing. Otherwise another
    round would likely break up to as many samples as the most productive check round did (``bound``: the last
    round alone understates it, as an independent attack's extra breaks show; the tier itself = round 0 when no
    round ran)."""
    counts = [tier] + rounds
    last = max((r for r, c in enumerate(counts) if c), default=0)
    converged = len(rounds) >= 2 and rounds[-2:] == [0, 0]
    return {
        "converged": converged,
        "rounds_run": len(rounds),
        "last_productive_round": last,
        "last_productive_breaks": counts[last],
        "bound": 0 if converged else max(rounds) if rounds else tier,
    }


def confidence_statement(eps: str, worst: float, conf: Optional[dict], total: int) -> str:
    """One line per epsilon: the worst case and what another round would likely still find."""
    head = f"eps={eps}: worst case {100 * worst:.1f} %"
    if not conf:
        return head + " (no adaptive tier: an upper bound)"
    k, r = conf["last_productive_breaks"], conf["last_productive_round"]
    where = "the adaptive tier" if r == 0 else f"check round {r}"
    if conf["converged"]:
        return (
            f"{head}; converged: the last productive round ({where}) broke {k} sample(s), the two rounds after it "
            "none, so another round would likely find nothing more"
        )
    bound = conf["bound"]
    if bound == 0:  # every round ran broke nothing, but fewer than the two that show convergence
        return (
            f"{head}; NOT shown converged: the {conf['rounds_run']} check round(s) broke nothing (the last "
            f"productive: {where}, {k} sample(s)), and two consecutive empty rounds are needed to show it"
        )
    return (
        f"{head}; NOT converged after {conf['rounds_run']} check round(s) (the last productive: {where}, {k} "
        f"sample(s)); another round would likely break up to as many as the most productive check round, {bound} "
        f"(up to {100 * bound / max(total, 1):.1f} points lower)"
    )


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
    tier that had not converged (2x budget still breaks samples), Square or transfer beating the white-box attacks.
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
            f"eps={eps}: adaptive attack converged (two consecutive check rounds broke nothing more)",
            v.confidence["converged"],
            "samples broken by each check round: " + ", ".join(map(str, r)),
            "attack not converged",
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
