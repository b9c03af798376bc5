"""Issue 14: property-based sweep of the public analysis API and the CLI (hypothesis).

Every generated call either returns a table with no NaN where a value is defined, or raises
a :class:`bayescale.BayescaleError`; any other exception (numpy's, pandas', a bare
ValueError from deep inside) fails the test. Synthetic posteriors, no sampling. The total
number of generated calls is printed at the end (the issue asks for ≥ 10,000 per run).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayescale as bs
from bayescale.cli import main
from conftest import (COMPUTE_TRUTH, synthetic_chinchilla_frame, synthetic_compute_frame,
                      synthetic_posterior_fit)

CALLS = {"api": 0, "cli": 0}
MIN_CALLS = 10_000
SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fits():
    chin = synthetic_posterior_fit(bs.load_runs(synthetic_chinchilla_frame()), spread=0.03,
                                   draws=60)
    comp = synthetic_posterior_fit(bs.load_runs(synthetic_compute_frame()), paper=COMPUTE_TRUTH,
                                   spread=0.03, draws=60, law="compute")
    return {"chinchilla": chin, "compute": comp}


# -- what users pass -------------------------------------------------------------------------

hostile_scalar = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e15, 1e27),                       # realistic budgets
    st.floats(1.0, 4.0),                         # realistic losses
    st.floats(0.01, 0.99),                       # realistic probabilities
    st.sampled_from([0, -1, 1, 10**400, 1e308, 1e-308, 5e-324, -0.0]),
    st.integers(-10, 10**30),
    st.booleans(), st.complex_numbers(max_magnitude=1e3), st.none(),
    st.text(max_size=3), st.sampled_from(["1e22", b"2.0"]))
hostile = st.one_of(
    hostile_scalar,
    st.lists(hostile_scalar, max_size=4),
    st.lists(st.floats(1e15, 1e27), min_size=0, max_size=5),
    st.lists(st.lists(st.floats(1.0, 2.0), max_size=2), max_size=2),
    st.lists(st.floats(1e15, 1e27), max_size=3).map(np.array))
probability = st.one_of(st.floats(0.01, 0.99), hostile_scalar)
choice = st.one_of(st.sampled_from(["observed", "mean", "median", "oracle", "ess", "iid",
                                    "none", "", "OBSERVED"]), st.none(), st.integers())
law = st.sampled_from(["chinchilla", "compute"])


def _call(function, *args, **kwargs):
    """Call; a BayescaleError is an answer, any other exception fails the property."""
    CALLS["api"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function(*args, **kwargs)
    except bs.BayescaleError:
        return None


def _no_nan(table, columns=None, rows=None):
    if table is None:
        return
    if isinstance(table, float):
        assert not math.isnan(table)
        return
    assert isinstance(table, pd.DataFrame)
    frame = table if rows is None else table[rows]
    values = frame[columns] if columns is not None else frame
    bad = values.isna()
    assert not bad.to_numpy().any(), f"NaN in {list(values.columns[bad.any()])}:\n{values}"


# -- the analysis API ------------------------------------------------------------------------

@settings(max_examples=600, **SETTINGS)
@given(law=law, flops=hostile, prob=probability, kind=choice, seed=hostile_scalar)
def test_forecast(fits, law, flops, prob, kind, seed):
    fit = fits[law]
    columns = ["flops", "loss_mean", "loss_median", "loss_lower", "loss_upper"]
    _no_nan(_call(fit.forecast, flops=flops, prob=prob, kind=kind), columns)
    _no_nan(_call(fit.forecast, flops=flops, random_seed=seed), columns)
    _no_nan(_call(fit.forecast, params=flops, tokens=prob), columns)


@settings(max_examples=600, **SETTINGS)
@given(law=law, target=hostile, flops=hostile, mode=choice, kind=choice, mcse=choice)
def test_prob_below(fits, law, target, flops, mode, kind, mcse):
    fit = fits[law]
    result = _call(fit.prob_below, target, flops, mode=mode, kind=kind, mcse=mcse)
    if isinstance(result, pd.DataFrame):
        _no_nan(result, ["flops", "prob"] + ([] if mcse == "none" else ["mcse"]))
        assert ((result["prob"] >= 0) & (result["prob"] <= 1)).all()
    else:
        _no_nan(result)
    _no_nan(_call(fit.prob_below, 2.2, params=flops, tokens=target), ["flops", "prob", "mcse"])


@settings(max_examples=450, **SETTINGS)
@given(law=law, target=hostile, prob=probability, mode=choice)
def test_compute_to_reach_and_distribution(fits, law, target, prob, mode):
    fit = fits[law]
    result = _call(fit.compute_to_reach, target, prob, mode=mode)
    if isinstance(result, pd.DataFrame):
        _no_nan(result, ["target", "prob", "flops", "prob_limit"])
        _no_nan(result, ["params", "tokens"],
                rows=np.isfinite(result["flops"]) & (mode == "median") & (law == "chinchilla"))
    else:
        _no_nan(result)
    _no_nan(_call(fit.compute_distribution, target, prob))


@settings(max_examples=700, **SETTINGS)
@given(law=law, targets=hostile, budgets=hostile, kind=choice)
def test_risk_table(fits, law, targets, budgets, kind):
    _no_nan(_call(fits[law].risk_table, targets, budgets, kind=kind))


@settings(max_examples=500, **SETTINGS)
@given(flops=hostile, target=hostile, tokens=hostile, prob=probability)
def test_allocation(fits, flops, target, tokens, prob):
    fit = fits["chinchilla"]
    _no_nan(_call(fit.optimal_allocation, flops, prob))
    aware = _call(fit.inference_optimal_allocation, target, tokens, prob)
    if aware is not None:
        reachable = aware["p_unreachable"] < 1       # all-unreachable rows are not defined
        _no_nan(aware, [c for c in aware.columns if c != "plan_prob"], rows=reachable)
    _no_nan(_call(fits["compute"].optimal_allocation, flops, prob))


@settings(max_examples=15, **SETTINGS)
@given(law=law, prob=probability)
def test_summary(fits, law, prob):
    _no_nan(_call(fits[law].summary, prob=prob))


invalid = st.one_of(
    st.booleans(), st.complex_numbers(min_magnitude=1e-3, max_magnitude=1e3), st.none(),
    st.text(max_size=3), st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 10**400,
                                          -(10**400), b"1"]),
    st.floats(max_value=0.0), st.lists(st.booleans(), min_size=1, max_size=3),
    st.lists(st.sampled_from([1e22, math.nan, True, "x", None, 1j]), min_size=2, max_size=4)
    .filter(lambda v: any(not isinstance(x, float) or not math.isfinite(x) for x in v)),
    st.just([[1e22], [1e23, 1e24]]), st.dictionaries(st.text(max_size=1), st.floats(), max_size=1),
    st.sets(st.floats(1.0, 2.0), min_size=1, max_size=2))
bad_choice = st.one_of(st.sampled_from(["", "OBSERVED", "best", "observed ", "means"]),
                       st.none(), st.integers(), st.booleans())


@settings(max_examples=700, **SETTINGS)
@given(law=law, bad=invalid, bad_kind=bad_choice, position=st.integers(0, 10))
def test_every_bad_argument_is_refused_by_the_package(fits, law, bad, bad_kind, position):
    """Stronger than "no foreign exception": each of these calls must raise a BayescaleError."""
    fit = fits[law]
    calls = [
        lambda: fit.forecast(flops=bad), lambda: fit.forecast(flops=1e22, prob=bad),
        lambda: fit.forecast(flops=1e22, kind=bad_kind), lambda: fit.prob_below(bad, flops=1e22),
        lambda: fit.prob_below(2.2, flops=bad), lambda: fit.prob_below(2.2, 1e22, mode=bad_kind),
        lambda: fit.compute_to_reach(bad), lambda: fit.compute_to_reach(2.2, prob=bad),
        lambda: fit.compute_distribution(bad), lambda: fit.risk_table(bad, [1e22]),
        lambda: fit.risk_table([2.2], bad), lambda: fit.optimal_allocation(bad),
        lambda: fit.inference_optimal_allocation(bad, 1e12),
        # 0 served tokens is allowed (T >= 0): give -1 there instead
        lambda: fit.inference_optimal_allocation(2.2, -1.0 if isinstance(bad, float) and bad == 0
                                                 else bad),
        lambda: fit.summary(prob=bad),
        lambda: fit.forecast(params=bad, tokens=1e11) if law == "chinchilla" else fit.forecast(flops=bad),
    ]
    rotated = calls[position:] + calls[:position]
    for call in rotated[:12]:
        CALLS["api"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(bs.BayescaleError):
                call()


# -- the command line ------------------------------------------------------------------------

number_text = st.one_of(st.sampled_from(["1e22", "1e23", "2.0", "2.05", "0", "-1", "nan", "inf",
                                         "1e308", "1e400", "x", "", "0.5", "1", "True"]),
                        st.floats(allow_nan=True).map(repr))


@pytest.fixture(scope="module")
def saved(fits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("props")
    paths = {}
    for name, fit in fits.items():
        paths[name] = folder / f"{name}.nc"
        fit.save(paths[name])
    return paths


@settings(max_examples=250, **SETTINGS)
@given(law=law, command=st.sampled_from(["forecast", "risk", "allocate"]),
       flag=st.sampled_from(["--flops", "--target", "--budget", "--prob", "--params",
                             "--tokens", "--inference-tokens", "--seed", "--band", "--mode",
                             "--kind"]),
       values=st.lists(number_text, min_size=1, max_size=3),
       extra=st.lists(st.sampled_from(["--flops", "1e22", "--target", "2.1", "--json",
                                       "--budget", "3e22", "--params", "7e9", "--tokens",
                                       "1e11", "--inference-tokens", "1e12"]), max_size=4))
def test_cli(saved, capsys, law, command, flag, values, extra):
    argv = [command, str(saved[law]), flag, *values, *extra]
    CALLS["cli"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            status = main(argv)
        except SystemExit as exc:          # argparse's usage error: a message, status 2
            status = exc.code
    out, err = capsys.readouterr()
    assert status in (0, 2), (argv, err)
    assert "Traceback" not in err
    if status == 0 and "--json" in argv:
        json.loads(out, parse_constant=lambda token: pytest.fail(f"{token} in JSON: {argv}"))
    if status == 0:
        assert not any(word in out.split() for word in ("nan", "NaN")), (argv, out)


def test_zz_generated_call_count(capsys):
    total = CALLS["api"] + CALLS["cli"]
    with capsys.disabled():
        print(f"\nhypothesis sweep: {total} generated calls ({CALLS['api']} analysis API, "
              f"{CALLS['cli']} CLI)")
    if total:   # the count is meaningful when the whole module ran
        assert total >= MIN_CALLS, total
