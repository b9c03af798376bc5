"""What follows from a law's declarations: extra run inputs, their round trip, the fast path's
fallback, and an import graph without cycles."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayescale as bs
from bayescale import _fastlogp
from bayescale.data import InputSpec, register_input
from bayescale.laws.base import PaperParameter, Parameter, ScalingLaw, e_fraction_parameter
from bayescale.model import FastPathWarning
from bayescale.priors import Prior
from conftest import synthetic_chinchilla_frame, synthetic_posterior_fit

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = InputSpec("widgets", "W", "widget count", "widget counts", "widgets")
register_input(WIDGETS)


def _frame_with_widgets():
    frame = synthetic_chinchilla_frame()
    return frame.assign(W=frame["tokens"] / 3.0)


def test_load_runs_reads_a_declared_extra_input_and_validates_it():
    runs = bs.load_runs(_frame_with_widgets(), widgets="W")
    assert list(runs.frame.columns) == ["params", "tokens", "flops", "loss", "widgets"]
    np.testing.assert_allclose(runs.column("widgets"), runs.column("tokens") / 3.0)
    assert "widgets" in runs.available_inputs()
    bad = _frame_with_widgets()
    bad.loc[4, "W"] = -1.0
    with pytest.raises(bs.RunDataError, match=r"column 'W', row 4: value -1.0 must be positive \(widgets > 0\)"):
        bs.load_runs(bad, widgets="W")
    with pytest.raises(bs.RunDataError, match=r"missing column 'U' \(widget count, given as widgets='U'\)"):
        bs.load_runs(_frame_with_widgets(), widgets="U")
    with pytest.raises(TypeError, match=r"unexpected keyword 'gadgets'"):
        bs.load_runs(_frame_with_widgets(), gadgets="W")


def test_saved_fits_keep_declared_extra_inputs(tmp_path):
    runs = bs.load_runs(_frame_with_widgets(), widgets="W")
    fit = synthetic_posterior_fit(runs, spread=0.01)
    fit.save(tmp_path / "fit.nc")
    loaded = bs.load_fit(tmp_path / "fit.nc")
    pd.testing.assert_frame_equal(loaded.runs.frame, runs.frame)
    pd.testing.assert_frame_equal(loaded.forecast(flops=[1e22]), fit.forecast(flops=[1e22]))


class _WidgetLaw(ScalingLaw, register_law=False):
    """A test law of N, D and W, written as log_loss with a softplus: L = E + A/N^α·(1 + W/D)."""

    name = "widget-test"
    formula = "L = E + A / N^alpha * (1 + W / D)"
    inputs = ("params", "tokens", "widgets")
    parameters = (e_fraction_parameter(), Parameter("a", Prior("Normal", mu=-1, sigma=1)),
                  Parameter("alpha", Prior("LogNormal", mu=math.log(0.3), sigma=0.5), 0.0, math.inf))
    paper = (PaperParameter("E"), PaperParameter("alpha"))
    compute_optimal = "numeric"

    def log_loss(self, theta, log_x, ref, xp):
        reducible = (theta["a"] - theta["alpha"] * (log_x["params"] - ref["log_ref_params"])
                     + xp.logaddexp(0.0, log_x["widgets"] - log_x["tokens"]))
        return xp.logaddexp(reducible, self.log_e(theta, ref, xp))


def test_a_log_loss_law_with_an_extra_input_gets_a_derived_kernel_matching_numpy():
    law = _WidgetLaw()
    runs = bs.load_runs(_frame_with_widgets(), widgets="W")
    model = bs.ScalingModel(law, likelihood="normal")
    data = model.data_values(runs)
    buf = _fastlogp.make_buffer(law, "normal", model.priors, model.sampled_parameters(), data)
    u = np.array([0.3, -0.8, math.log(0.25), math.log(0.05)])
    lp, grad = _fastlogp.logp_and_grad(law, buf, u)

    def numpy_logp(u):  # the same density written out with numpy, priors up to constants
        s = 1 / (1 + math.exp(-u[0]))
        theta = {"E_fraction": s, "a": u[1], "alpha": math.exp(u[2])}
        sigma = math.exp(u[3])
        ref = {k: float(data[k]) for k in law.reference_names()}
        mu = law.log_loss(theta, {k: data[f"log_{k}"] for k in law.inputs}, ref, np)
        r = (data["log_loss_observed"] - mu) / sigma
        out = -0.5 * np.sum(r * r) - r.size * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
        out += math.log(s) + math.log(1 - s) + (2 - 1) * math.log(s) + (1.5 - 1) * math.log(1 - s)
        out += -0.5 * ((u[1] + 1) / 1) ** 2
        out += -0.5 * ((u[2] - math.log(0.3)) / 0.5) ** 2
        out += -0.5 * (sigma / 0.1) ** 2 + u[3]
        return out

    offset = lp - numpy_logp(u)
    u2 = u + np.array([0.1, -0.2, 0.05, 0.1])
    assert _fastlogp.logp_and_grad(law, buf, u2)[0] - numpy_logp(u2) == pytest.approx(offset, abs=1e-9)
    numeric = np.array([(numpy_logp(u + h) - numpy_logp(u - h)) / 2e-6 for h in np.eye(4) * 1e-6])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_a_formula_the_fast_path_cannot_derive_falls_back_with_a_one_line_notice():
    class Arctan(_WidgetLaw, register_law=False):
        name = "arctan-test"

        def log_loss(self, theta, log_x, ref, xp):
            return self.log_e(theta, ref, xp) + xp.arctan(theta["a"] + 0.0 * log_x["params"])

    law = Arctan()
    reason = _fastlogp.supports(law, "student_t")
    assert reason is not None and "xp.arctan" in reason
    runs = bs.load_runs(_frame_with_widgets(), widgets="W")
    with pytest.warns(FastPathWarning, match=r"no fast density for the arctan-test law .*xp\.arctan") as record:
        assert bs.ScalingModel(law)._fast_compiled(runs) is None
    assert "\n" not in str(record[0].message)


def _import_graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycles():
    graph_tools = _import_graph_module()
    graph = graph_tools.import_graph(ROOT / "bayescale")
    inner = {k: {t for t in v if t != "bayescale"} for k, v in graph.items() if k != "bayescale"}
    assert graph_tools.cycles(inner) == []
    # Nothing but the package's own __init__ imports the package root.
    assert [k for k, v in graph.items() if "bayescale" in v and k != "bayescale"] == []
    # Analysis modules work on draws and the law: they import neither fit nor model.
    for name in ("forecast", "risk", "allocation", "design", "plotting", "report", "io"):
        assert not {"bayescale.fit", "bayescale.model"} & graph[f"bayescale.{name}"], name


def test_the_numeric_split_finds_chinchillas_closed_form():
    from bayescale.laws.base import numeric_optimal_log_params

    law = bs.get_law("chinchilla")
    rng = np.random.default_rng(0)
    theta = {"E_fraction": np.full((50, 1), 0.9), "a": rng.normal(-1, 0.3, (50, 1)),
             "b": rng.normal(-1, 0.3, (50, 1)), "alpha": rng.uniform(0.25, 0.45, (50, 1)),
             "beta": rng.uniform(0.25, 0.45, (50, 1))}
    ref = {"log_min_loss": math.log(2.0), "log_ref_params": math.log(1e9),
           "log_ref_tokens": math.log(2e10)}
    log_c = np.log(np.array([[1e20, 1e23, 1e25]]))
    np.testing.assert_allclose(numeric_optimal_log_params(law, theta, ref, log_c),
                               law.optimal_log_params(theta, ref, log_c), atol=1e-6)


def test_a_numeric_split_needs_the_laws_extra_inputs():
    law = _WidgetLaw()
    theta = {"E_fraction": 0.9, "a": -1.0, "alpha": 0.3}
    ref = {k: 0.0 for k in law.reference_names()}
    with pytest.raises(bs.ModelMismatchError, match="holds widgets fixed"):
        law.optimal_log_params(theta, ref, np.log(1e21))
    assert np.isfinite(law.optimal_log_params(theta, ref, np.log(1e21), {"widgets": np.log(1e9)}))


def test_cli_law_choices_and_input_columns_come_from_the_declarations(capsys):
    from bayescale.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    choices = text.split("--law {", 1)[1].split("}", 1)[0].split(",")
    assert choices == bs.available_laws()
    assert "--widgets-col" in text  # the input declared at the top of this file
