"""The ``bayescale`` command line: fit, forecast and demo on CSV files of runs."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._validate import SEED_MAX, finite_or_none, output_path
from .exceptions import ArgumentError, BayescaleError

DEMO_BUDGETS = (1e22, 1e23, 1e24, 1e25)


# -- formatting ----------------------------------------------------------------------------

def _sci(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "n/a"


def format_parameter_table(summary: pd.DataFrame) -> str:
    """The parameter table as fixed-width text."""
    level = round(100 * summary.attrs.get("prob", 0.94))
    rows = []
    for name, row in summary.iterrows():
        rows.append({"parameter": name, "median": _sci(row["median"]),
                     f"{level}% interval": f"[{_sci(row['hdi_lower'])}, {_sci(row['hdi_upper'])}]",
                     "R-hat": f"{row['r_hat']:.3f}" if np.isfinite(row["r_hat"]) else "n/a",
                     "ESS bulk": f"{row['ess_bulk']:.0f}" if np.isfinite(row["ess_bulk"]) else "n/a"})
    return pd.DataFrame(rows).to_string(index=False)


def format_forecast_table(tables: Sequence[pd.DataFrame],
                          lead: dict[str, list[str]] | None = None) -> str:
    """Forecast tables at several band levels (same points) merged into one text table;
    ``lead`` columns (e.g. the budget in dollars) go first."""
    first = tables[0]
    out = pd.DataFrame({**(lead or {}), "FLOPs": first["flops"].map(_sci)})
    if first["params"].notna().all():
        out["N (params)"] = first["params"].map(_sci)
        out["D (tokens)"] = first["tokens"].map(_sci)
    out["median loss"] = first["loss_median"].map(lambda v: f"{v:.4f}")
    for table in tables:
        level = round(100 * table.attrs["prob"])
        out[f"{level}% band"] = [f"[{lo:.4f}, {hi:.4f}]"
                                 for lo, hi in zip(table["loss_lower"], table["loss_upper"])]
    return out.to_string(index=False)


# -- shared arguments ----------------------------------------------------------------------

def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", help="CSV of runs (one row per training run)")
    group = parser.add_argument_group("columns of the CSV")
    group.add_argument("--params-col", default="params", help="column with N, the parameter count")
    group.add_argument("--tokens-col", default="tokens", help="column with D, the training tokens")
    group.add_argument("--flops-col", default="flops", help="column with C (derived 6·N·D if absent)")
    group.add_argument("--loss-col", default="loss", help="column with the final loss")
    for spec in _extra_input_specs():
        group.add_argument(f"--{spec.name.replace('_', '-')}-col", dest=f"{spec.name}_col",
                           default=None, help=f"column with {spec.symbol}, the {spec.label} "
                           "(laws that declare it)")
    held = parser.add_argument_group("extra inputs held fixed in forecasts")
    for spec in _extra_input_specs():
        held.add_argument(f"--{spec.name.replace('_', '-')}", dest=f"hold_{spec.name}",
                          type=_positive_float, default=None, metavar=spec.symbol,
                          help=f"{spec.label} {spec.symbol} that forecasts, risks and "
                          "allocations hold fixed (laws that declare it; default: the "
                          "largest in the runs)")


def _extra_input_specs():
    from .data import STANDARD_INPUTS, declared_inputs, input_spec
    from .laws import available_laws  # noqa: F401 - importing the laws declares their inputs

    return [input_spec(n) for n in declared_inputs() if n not in STANDARD_INPUTS]


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and sampler")
    from .laws import available_laws

    group.add_argument("--law", default="chinchilla", choices=available_laws())
    group.add_argument("--likelihood", default="student_t", choices=["student_t", "normal"])
    group.add_argument("--draws", type=_positive_int, default=1000, help="draws per chain")
    group.add_argument("--tune", type=_positive_int, default=1000, help="tuning steps per chain")
    group.add_argument("--chains", type=_positive_int, default=4)
    group.add_argument("--seed", type=_seed, default=0,
                       help=f"random seed, 0 to {SEED_MAX} (default 0: reproducible)")
    group.add_argument("--sampler", default="nutpie", choices=["nutpie", "pymc"])
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e23, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {SEED_MAX}, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e13, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _unique_in_order(values: Sequence[float] | None) -> list[float] | None:
    """The values without repeats (a target given twice is asked once)."""
    return None if values is None else list(dict.fromkeys(values))


def _json_ready(value):
    """Nested dicts/lists/tables with NaN and inf as null and numpy scalars as Python ones."""
    if isinstance(value, pd.DataFrame):
        return [_json_ready(row) for row in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return _json_ready(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    return finite_or_none(value)


def _print_json(payload) -> None:
    """Print strictly valid JSON (no NaN/Infinity tokens): null where a value is not defined."""
    print(json.dumps(_json_ready(payload), allow_nan=False))


def _check_outputs(args: argparse.Namespace, *paths: object, directory: bool = False) -> None:
    """Refuse an output that cannot be written, before any fitting starts."""
    for path in paths:
        if path is not None:
            output_path(path, overwrite=bool(getattr(args, "force", False)), name="--output",
                        directory=directory, force_hint="--force")


def _probability(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text!r}")
    return value


def _load_cli_runs(args: argparse.Namespace):
    from .data import load_runs

    extras = {spec.name: getattr(args, f"{spec.name}_col", None) for spec in _extra_input_specs()}
    return load_runs(args.runs, params=args.params_col, tokens=args.tokens_col,
                     flops=args.flops_col, loss=args.loss_col,
                     metric=getattr(args, "metric_col", None),
                     task_loss=getattr(args, "task_loss_col", None),
                     **{name: column for name, column in extras.items() if column})


def _fit_from_args(args: argparse.Namespace, runs=None):
    from .model import ScalingModel

    runs = runs if runs is not None else _load_cli_runs(args)
    model = ScalingModel(args.law, likelihood=args.likelihood, **_link_kwargs(args))
    print(f"Fitting the {args.law} law to {len(runs)} runs from {runs.source} "
          f"({args.chains} chains x {args.draws} draws, seed {args.seed})...", file=sys.stderr)
    return model.fit(runs, draws=args.draws, tune=args.tune, chains=args.chains,
                     random_seed=args.seed, sampler=args.sampler,
                     progressbar=not args.no_progress)


def _link_kwargs(args: argparse.Namespace) -> dict:
    """ScalingModel's link options when a metric column was given (issue 16)."""
    if getattr(args, "metric_col", None) is None:
        if getattr(args, "task_loss_col", None) or getattr(args, "chance", None) is not None:
            raise BayescaleError("--task-loss-col and --chance describe a metric: give "
                                 "--metric-col too")
        return {}
    return {"link": "sigmoid", "chance": args.chance, "link_method": args.link_method}


def _add_metric_arguments(parser: argparse.ArgumentParser, *, risk: bool = False) -> None:
    group = parser.add_argument_group(
        "downstream metric (loss -> accuracy: the law fits the task loss, a sigmoid links it "
        "to the metric)")
    group.add_argument("--metric-col", metavar="COLUMN",
                       help="column with a metric in [0, 1] per run (e.g. mmlu_acc); fits the "
                            "link and reports the metric too")
    group.add_argument("--task-loss-col", metavar="COLUMN",
                       help="column with the task loss the link reads (e.g. mmlu_bpb); "
                            "default: the loss")
    group.add_argument("--chance", type=_nonnegative_float, metavar="P",
                       help="the metric's floor, e.g. 0.25 for 4-way multiple choice (default 0)")
    group.add_argument("--link-method", choices=["two_stage", "joint"], default=None,
                       help="fit law and link in two stages (default) or jointly")
    if risk:
        group.add_argument("--metric-target", type=_probability, nargs="+", metavar="A",
                           help="metric target(s) in (0, 1): P(metric >= A) at --budget and "
                                "the compute to reach A with each --prob")


def _metric_forecast(fit, kwargs: dict, probs: Sequence[float], kind: str, as_json: bool):
    """Print (or return for JSON) the metric forecast of a fit with a link."""
    if getattr(fit, "link", None) is None:
        return None
    tables = [fit.forecast_metric(**kwargs, prob=p, kind=kind) for p in sorted(probs)]
    if as_json:
        last = tables[-1]
        return {"metric": last.attrs["metric"], "chance": last.attrs["chance"],
                "method": last.attrs["method"], "prob": last.attrs["prob"],
                "bands": {f"{p:g}": t[["metric_lower", "metric_upper"]]
                          for p, t in zip(sorted(probs), tables)},
                "forecast": last, "findings": fit.link_findings()}
    first = tables[0]
    print(f"\nForecast of {kind} {first.attrs['metric']} (link reads {first.attrs['loss']}; "
          f"chance {first.attrs['chance']:g}; {first.attrs['method'].replace('_', '-')} fit)")
    out = pd.DataFrame({"FLOPs": first["flops"].map(_sci), "N": first["params"].map(_sci),
                        "D": first["tokens"].map(_sci),
                        "median": first["metric_median"].map(lambda v: f"{v:.4f}")})
    for table in tables:
        level = round(100 * table.attrs["prob"])
        out[f"{level}% band"] = [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in
                                 zip(table["metric_lower"], table["metric_upper"])]
    print(out.to_string(index=False))
    for finding in fit.link_findings():
        print(f"Note: {finding}")
    return None


def _fit_or_load(args: argparse.Namespace):
    from .fit import load_fit

    if Path(args.runs).suffix.lower() in (".nc", ".netcdf"):
        return _hold_inputs(load_fit(args.runs), args)
    return _hold_inputs(_fit_from_args(args), args)


def _hold_inputs(fit, args: argparse.Namespace):
    """The fit with the law's extra inputs held at the values given (--unique-tokens ...),
    the rest at their largest value in the runs (said on stderr)."""
    given = {spec.name: getattr(args, f"hold_{spec.name}", None) for spec in _extra_input_specs()}
    given = {name: value for name, value in given.items() if value is not None}
    unused = sorted(set(given) - set(fit.law.extra_inputs))
    if unused:
        raise ArgumentError(f"--{unused[0].replace('_', '-')} is an input of other laws; the "
                            f"{fit.law.name} law does not read it")
    fit, note = fit.holding(**given).for_presentation()
    if note:
        print(note.replace("use fit.holding(...)", "give --" + "/--".join(
            n.replace("_", "-") for n in fit.law.extra_inputs)), file=sys.stderr)
    return fit


def _print_fit(fit) -> None:
    print(f"\nParameters of {fit.law.formula} (posterior median, 94% HDI)")
    print(format_parameter_table(fit.summary()))
    diagnostics = fit.diagnostics()
    print(f"\nDiagnostics: {diagnostics.verdict()} (sampling took {fit.settings['seconds']:.1f} s)")


# -- budgets in money and GPU-hours --------------------------------------------------------

def _add_budget_arguments(parser: argparse.ArgumentParser, *, single: bool = False) -> None:
    from .budget import known_accelerators

    group = parser.add_argument_group(
        "budgets in money or GPU-hours (FLOPs = GPU-hours x 3600 x peak x MFU)")
    many = {} if single else {"nargs": "+"}
    group.add_argument("--budget-usd", type=_positive_float, **many,
                       help="budget(s) in dollars (with --gpu, --mfu, --usd-per-hour)")
    group.add_argument("--budget-gpu-hours", type=_positive_float, **many,
                       help="budget(s) in chip-hours (with --gpu, --mfu)")
    group.add_argument("--gpu", metavar="NAME",
                       help=f"accelerator: {', '.join(known_accelerators())} (dense BF16 peak)")
    group.add_argument("--peak-flops", type=_positive_float,
                       help="dense BF16 peak FLOP/s per chip, for a chip not in the list")
    group.add_argument("--mfu", type=_positive_float, nargs="+", metavar="U",
                       help="model FLOPs utilization: one value (0.4) or a range (0.35 0.45)")
    group.add_argument("--usd-per-hour", type=_positive_float,
                       help="dollars per chip-hour (for budgets and answers in dollars)")
    group.add_argument("--chips", type=_positive_int,
                       help="chips in the run (answers also in days on that many chips)")


def _hardware_from_args(args: argparse.Namespace):
    """The Hardware the flags describe, or None when none were given."""
    from .budget import Hardware

    given = [flag for flag, value in (("--gpu", args.gpu), ("--peak-flops", args.peak_flops),
                                      ("--mfu", args.mfu), ("--usd-per-hour", args.usd_per_hour),
                                      ("--chips", args.chips)) if value is not None]
    money = args.budget_usd is not None or args.budget_gpu_hours is not None
    if not given and not money:
        return None
    if args.gpu is None and args.peak_flops is None:
        raise BayescaleError("budgets in money or GPU-hours need the chip: --gpu NAME (or "
                             "--peak-flops for a chip not in the list) and --mfu")
    if args.gpu is not None and args.peak_flops is not None:
        raise BayescaleError("give --gpu or --peak-flops, not both")
    if args.mfu is None:
        raise BayescaleError("give --mfu, the model FLOPs utilization you expect (e.g. 0.4, "
                             "or a range: --mfu 0.35 0.45)")
    if len(args.mfu) > 2:
        raise BayescaleError(f"--mfu takes one value or a range of two, got {len(args.mfu)}")
    if args.budget_usd is not None and args.usd_per_hour is None:
        raise BayescaleError("--budget-usd needs --usd-per-hour (dollars per chip-hour)")
    for value in args.mfu:
        if value > 1:
            hint = " (40% MFU is --mfu 0.4)" if value <= 100 else ""
            raise BayescaleError(f"--mfu is a fraction in (0, 1], got {value:g}{hint}")
    mfu = args.mfu[0] if len(args.mfu) == 1 else tuple(args.mfu)
    if args.gpu is not None:
        from .budget import known_accelerators

        try:
            return Hardware.named(args.gpu, utilization=mfu, price_per_hour=args.usd_per_hour,
                                  chips=args.chips)
        except ValueError as exc:
            if not str(exc).startswith("unknown accelerator"):
                raise
            raise BayescaleError(f"unknown --gpu {args.gpu!r}; known: "
                                 f"{', '.join(known_accelerators())} (for another chip give "
                                 "--peak-flops, its dense BF16 peak FLOP/s)") from None
    return Hardware("custom chip", args.peak_flops, mfu, args.usd_per_hour, args.chips)


def _budget_from_args(args: argparse.Namespace, hardware, flops_flag: str):
    """A Budget from --budget-usd / --budget-gpu-hours, or None."""
    from .budget import Budget

    if args.budget_usd is not None and args.budget_gpu_hours is not None:
        raise BayescaleError("give --budget-usd or --budget-gpu-hours, not both")
    if args.budget_usd is None and args.budget_gpu_hours is None:
        return None
    if getattr(args, flops_flag.removeprefix("--").replace("-", "_")) is not None:
        raise BayescaleError(f"give {flops_flag} (FLOPs) or a budget in money/GPU-hours, "
                             "not both")
    if args.budget_usd is not None:
        return Budget.from_dollars(args.budget_usd, hardware)
    return Budget.from_gpu_hours(args.budget_gpu_hours, hardware)


def _cost_units(hardware) -> list[str]:
    """Units the hardware can express, besides FLOPs."""
    return (["gpu_hours"] + (["usd"] if hardware.price_per_hour is not None else [])
            + (["days"] if hardware.chips is not None else []))


_UNIT_LABELS = {"gpu_hours": "GPU-hours", "usd": "dollars", "days": "days"}


def _unit_text(value: float, unit: str, hardware) -> str:
    from .budget import fmt_days, fmt_hours, fmt_usd

    if not np.isfinite(value):
        return "unreachable" if value > 0 else "n/a"
    if unit == "usd":
        return fmt_usd(value)
    if unit == "gpu_hours":
        return fmt_hours(value).removesuffix(" GPU-hours")
    if unit == "days":
        return fmt_days(value).removesuffix(" days").removesuffix(" day")
    return _sci(value)


def _print_conversion(hardware, budget=None, note: str = "tables integrate over it") -> None:
    print(f"\nHardware: {hardware.describe()}.")
    if budget is not None and budget.unit != "flops":
        low, high = budget.flops_range()
        rows = [f"{_unit_text(a, budget.unit, hardware)} -> "
                + (f"{_sci(lo)} to {_sci(hi)} FLOPs" if budget.uncertain else f"{_sci(lo)} FLOPs")
                for a, lo, hi in zip(budget.amount, low, high)]
        label = _UNIT_LABELS.get(budget.unit, budget.unit)
        print(f"Budgets in {label}: " + "; ".join(rows)
              + (f" (the range is the MFU's; {note})" if budget.uncertain else ""))


# -- commands ------------------------------------------------------------------------------

def cmd_fit(args: argparse.Namespace) -> int:
    _check_outputs(args, args.output)
    fit = _fit_from_args(args)
    _print_fit(fit)
    if args.output:
        fit.save(args.output, overwrite=args.force)
        print(f"\nSaved the fit to {args.output}")
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    hardware = _hardware_from_args(args)
    budget = _budget_from_args(args, hardware, "--flops")
    if budget is not None:
        if args.params is not None or args.tokens is not None:
            raise BayescaleError("give a budget (--budget-usd/--budget-gpu-hours) or --params "
                                 "with --tokens, not both")
        args.flops = budget
    fit = _fit_or_load(args)
    if args.flops is None and args.params is None:
        raise BayescaleError("give --flops, or --params with --tokens")
    if args.flops is not None and (args.params is not None or args.tokens is not None):
        raise BayescaleError("give either --flops or --params with --tokens, not both "
                             "(flops is 6·params·tokens)")
    kwargs = ({"flops": args.flops} if args.flops is not None
              else {"params": args.params, "tokens": args.tokens})
    tables = [fit.forecast(**kwargs, prob=p, kind=args.kind) for p in sorted(args.prob)]
    metric = _metric_forecast(fit, kwargs, args.prob, args.kind, args.json) \
        if budget is None else None
    if args.json:
        _print_json({"kind": args.kind, "prob": tables[-1].attrs["prob"], "forecast": tables[-1],
                     **({"metric_forecast": metric} if metric is not None else {}),
                     **({"hardware": hardware.describe()} if hardware else {})})
    else:
        print(f"\nForecast of {args.kind} loss")
        lead = ({_UNIT_LABELS[budget.unit]: [_unit_text(v, budget.unit, hardware)
                                             for v in budget.amount]}
                if budget is not None else None)
        print(format_forecast_table(tables, lead=lead))
        if hardware is not None:
            _print_conversion(hardware, budget)
    return 0


def _metric_risk(args: argparse.Namespace, fit, budgets: Sequence[float], probs) -> dict | None:
    """P(metric >= target) at the budgets and the compute to reach each target (issue 16)."""
    targets = _unique_in_order(getattr(args, "metric_target", None))
    if not targets:
        return None
    if getattr(fit, "link", None) is None:
        raise BayescaleError("--metric-target needs a fit with a metric link: give --metric-col "
                             "(and --chance) with the runs, or a saved fit made with them")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        above = (fit.prob_metric_above(targets, list(budgets), kind=args.kind)
                 if len(budgets) else None)
        reach = fit.compute_to_reach_metric(targets, probs, kind=args.kind)
    _report_warnings(caught)
    name = fit.link.metric_name
    if not args.json:
        if above is not None:
            print(f"\nP({name} >= target) for one run at each budget in FLOPs")
            table = pd.DataFrame({"budget": above["flops"].map(_flops_text)})
            for t in targets:
                table[f">= {t:g}"] = above[f"prob_{t:g}"].map(lambda v: f"{v:.3f}")
            print(table.to_string(index=False))
        print(f"\nCompute to reach the {name} target with each confidence (FLOPs)")
        out = pd.DataFrame({f"target {name}": [f"{t:g}" for t in targets]})
        for p in probs:
            rows = reach[reach["prob"] == p].set_index("target")["flops"]
            out[f"{round(100 * p)}%"] = [_flops_text(rows[t]) for t in targets]
        print(out.to_string(index=False))
        for finding in fit.link_findings():
            print(f"Note: {finding}")
    return {"metric": name, "prob_above": above if above is not None else [],
            "compute_to_reach": reach, "findings": fit.link_findings()}


def format_backtest_summary(summary: pd.Series) -> str:
    """A backtest's summary (RMSLE, bias, CRPS, coverage and width per level) as text."""
    rows = [("runs fitted / forecast", f"{int(summary['n_train'])} / {int(summary['n_test'])}"),
            ("RMSLE", f"{summary['rmsle']:.4f}"),
            ("bias (mean log median/actual)", f"{summary['bias']:+.4f}"),
            ("CRPS (log loss)", f"{summary['crps']:.4f}")]
    for name in summary.index:
        if name.startswith("coverage_"):
            label = name.removeprefix("coverage_")
            rows.append((f"{label}% band: coverage, mean width",
                         f"{summary[name]:.2f}, {summary[f'width_{label}']:.4f}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import backtest
    from .io import atomic_write

    _check_outputs(args, args.output)
    runs = _load_cli_runs(args)
    split = ({"cutoff_flops": args.cutoff_flops} if args.cutoff_flops is not None
             else {"holdout_frac": args.holdout_frac})
    print(f"Backtest of the {args.law} law on {len(runs)} runs from {runs.source} "
          f"({args.chains} chains x {args.draws} draws, seed {args.seed})...", file=sys.stderr)
    result = backtest(runs, args.law, **split, prob=sorted(args.prob), likelihood=args.likelihood,
                      draws=args.draws, tune=args.tune, chains=args.chains,
                      random_seed=args.seed, sampler=args.sampler,
                      progressbar=not args.no_progress)
    if args.json:
        _print_json({"settings": dict(result.settings), "summary": result.summary,
                     "table": result.table})
    else:
        print(f"\nForecasts of the {int(result.summary['n_test'])} held-out runs "
              "(observed loss: law uncertainty plus run-to-run noise)")
        shown = result.table[["flops", "loss", "loss_median", "log_error", "pit"]].copy()
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print("\nScore")
        print(format_backtest_summary(result.summary))
    if args.output:
        with atomic_write(args.output, overwrite=args.force) as tmp:
            result.table.to_csv(tmp, index=False)
        print(f"\nWrote the per-run table to {args.output}", file=sys.stderr)
    return 0


def _json_records(table: pd.DataFrame) -> list[dict]:
    """Records with inf/NaN as null, so the JSON is valid for strict parsers."""
    return _json_ready(table)


def _band_text(lower: float, upper: float) -> str:
    return f"[{_sci(lower)}, {_sci(upper)}]"


def _flops_text(value: float) -> str:
    return _sci(value) if np.isfinite(value) else "unreachable"


def _report_warnings(caught) -> None:
    seen = set()
    for item in caught:
        message = str(item.message)
        if message not in seen:
            seen.add(message)
            print(f"bayescale: warning: {message}", file=sys.stderr)


def format_risk_table(table: pd.DataFrame, labels: Sequence[str] | None = None) -> str:
    """risk_table() as text: one row per target, one column per budget (headed by
    ``labels`` when given, e.g. budgets in dollars)."""
    out = pd.DataFrame({"target loss": [f"{t:g}" for t in table.index]})
    for i, flops in enumerate(table.columns):
        out[labels[i] if labels else _sci(flops)] = [f"{p:.3f}" for p in table[flops]]
    text = out.to_string(index=False)
    if table.attrs.get("params"):
        plan = ", ".join(f"{_sci(c)}: N={_sci(n)}, D={_sci(d)}" for c, n, d in
                         zip(table.columns, table.attrs["params"], table.attrs["tokens"]))
        if labels:
            plan = ", ".join(f"{label}: N={_sci(n)}, D={_sci(d)}" for label, n, d in
                             zip(labels, table.attrs["params"], table.attrs["tokens"]))
        text += f"\n(allocation used, posterior-median compute-optimal: {plan})"
    return text


def cmd_risk(args: argparse.Namespace) -> int:
    hardware = _hardware_from_args(args)
    money = _budget_from_args(args, hardware, "--budget")
    if not args.target and not getattr(args, "metric_target", None):
        # As argparse reports a missing required option (--target was required before
        # --metric-target existed).
        print("bayescale risk: error: the following arguments are required: --target "
              "(or --metric-target for a metric)", file=sys.stderr)
        raise SystemExit(2)
    fit = _fit_or_load(args)
    targets = _unique_in_order(args.target)
    budgets, probs = _unique_in_order(args.budget) or [], sorted(set(args.prob))
    if not targets:
        metric = _metric_risk(args, fit, [] if money is not None else budgets, probs)
        if args.json:
            _print_json({"kind": args.kind, "metric_risk": metric})
        return 0
    if money is not None:
        budgets = money
    units = {} if hardware is None else {"units": ["flops", *_cost_units(hardware)],
                                         "hardware": hardware}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        has_budgets = money is not None or len(budgets) > 0
        grid = fit.risk_table(targets, budgets, mode=args.mode, kind=args.kind) if has_budgets else None
        per_target = ([fit.prob_below(t, budgets, mode=args.mode, kind=args.kind)
                       for t in targets] if has_budgets else [])
        reach = fit.compute_to_reach([t for t in targets for _ in probs], probs * len(targets),
                                     mode=args.mode, kind=args.kind, **units)
        spread = fit.compute_distribution(targets, prob=args.band, **units)
    _report_warnings(caught)
    metric = (_metric_risk(args, fit, [] if money is not None else budgets, probs)
              if args.json else None)
    if args.json:
        risk_rows = [dict(row, target=t) for t, table in zip(targets, per_target)
                     for row in _json_records(table)]
        _print_json({"mode": args.mode, "kind": args.kind, "risk": risk_rows,
                     "compute_to_reach": reach, "compute_distribution": spread,
                     "band": args.band,
                     **({"metric_risk": metric} if metric is not None else {}),
                     **({"hardware": hardware.describe()} if hardware else {})})
        return 0
    where = ("compute law: the budget alone sets the loss" if not fit.law.splits_compute
             else "each posterior draw at its own optimum" if args.mode == "oracle"
             else "at the posterior-median compute-optimal allocation")
    noise = "run-to-run noise included" if args.kind == "observed" else "the law's mean loss"
    if grid is not None:
        unit = "FLOPs" if money is None else _UNIT_LABELS[money.unit]
        print(f"\nP(loss <= target) for one run at each budget in {unit} ({where}; {noise}; "
              f"Monte-Carlo error <= {grid.attrs['mcse_max']:.1g})")
        labels = (None if money is None
                  else [_unit_text(v, money.unit, hardware) for v in money.amount])
        print(format_risk_table(grid, labels=labels))
    print(f"\nCompute to reach the target with each confidence (FLOPs; {where})")
    out = pd.DataFrame({"target loss": [f"{t:g}" for t in targets]})
    for p in probs:
        rows = reach[reach["prob"] == p].set_index("target")["flops"]
        out[f"{round(100 * p)}%"] = [_flops_text(rows[t]) for t in targets]
    print(out.to_string(index=False))
    level = round(100 * args.band)
    print(f"\nCompute at which the law's expected loss reaches the target, per posterior draw "
          f"(median, {level}% band; unreachable where E >= target)")
    print(pd.DataFrame({
        "target loss": [f"{t:g}" for t in spread["target"]],
        "median FLOPs": spread["flops_median"].map(_flops_text),
        f"{level}% band": [f"[{_flops_text(lo)}, {_flops_text(hi)}]"
                           for lo, hi in zip(spread["flops_lower"], spread["flops_upper"])],
        "P(unreachable)": spread["p_unreachable"].map(lambda v: f"{v:.3f}")}).to_string(index=False))
    if hardware is not None:
        _print_reach_in_units(reach, spread, targets, probs, hardware, level)
        _print_conversion(hardware, money)
    _metric_risk(args, fit, [] if money is not None else budgets, probs)
    return 0


def _print_reach_in_units(reach: pd.DataFrame, spread: pd.DataFrame, targets, probs,
                          hardware, level: int) -> None:
    for unit in _cost_units(hardware):
        label = _UNIT_LABELS[unit] + (f" on {hardware.chips:,} chips" if unit == "days" else "")
        print(f"\nBudget to reach the target with each confidence, in {label}"
              + (" (MFU uncertainty included)" if hardware.uncertain else ""))
        out = pd.DataFrame({"target loss": [f"{t:g}" for t in targets]})
        for p in probs:
            rows = reach[reach["prob"] == p].set_index("target")[unit]
            out[f"{round(100 * p)}%"] = [_unit_text(rows[t], unit, hardware) for t in targets]
        out[f"per-draw median ({level}% band)"] = [
            f"{_unit_text(m, unit, hardware)} [{_unit_text(lo, unit, hardware)}, "
            f"{_unit_text(hi, unit, hardware)}]"
            for m, lo, hi in zip(spread[f"{unit}_median"], spread[f"{unit}_lower"],
                                 spread[f"{unit}_upper"])]
        print(out.to_string(index=False))


def cmd_allocate(args: argparse.Namespace) -> int:
    if args.flops is None and args.target is None:
        raise BayescaleError("give --flops (budgets to split), or --target with "
                             "--inference-tokens (inference-aware allocation)")
    if (args.target is None) != (args.inference_tokens is None):
        raise BayescaleError("--target and --inference-tokens go together")
    hardware = _hardware_from_args(args)
    money = _budget_from_args(args, hardware, "--flops")
    if money is not None:
        args.flops = money
    units = {} if hardware is None else {"units": ["flops", *_cost_units(hardware)],
                                         "hardware": hardware}
    fit = _fit_or_load(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fit.optimal_allocation(args.flops, prob=args.prob) if args.flops else None
        aware = (fit.inference_optimal_allocation(args.target, args.inference_tokens,
                                                  prob=args.prob, **units)
                 if args.target is not None else None)
    _report_warnings(caught)
    if args.json:
        _print_json({"prob": args.prob,
                     "allocation": table if table is not None else [],
                     "inference_aware": aware if aware is not None else [],
                     **({"hardware": hardware.describe()} if hardware else {})})
        return 0
    level = round(100 * args.prob)
    if table is not None:
        print(f"\nCompute-optimal allocation, C = 6·N·D (posterior median, {level}% band)")
        out = pd.DataFrame({"FLOPs": table["flops"].map(_sci)})
        if money is not None:
            out.insert(0, _UNIT_LABELS[money.unit],
                       [_unit_text(v, money.unit, hardware) for v in money.amount])
        for name, label in (("params", "N (params)"), ("tokens", "D (tokens)"),
                            ("tokens_per_param", "tokens/param"), ("loss", "loss at optimum")):
            out[label] = table[f"{name}_median"].map(_sci)
            out[f"{level}% band " + label.split()[0]] = [
                _band_text(lo, hi) for lo, hi in zip(table[f"{name}_lower"], table[f"{name}_upper"])]
        print(out.to_string(index=False))
    if aware is not None:
        print(f"\nInference-aware allocation (Sardana et al. 2023): least training + inference "
              f"FLOPs reaching the target (posterior median, {level}% band)")
        for _, row in aware.iterrows():
            print(f"\ntarget loss {row['target']:g}, serving {_sci(row['inference_tokens'])} tokens "
                  f"(P(target unreachable) = {row['p_unreachable']:.3f})")
            if row["p_unreachable"] == 1.0:
                print("  out of reach in every posterior draw: the target is below the "
                      "irreducible loss E")
                continue
            lines = [(label, row[f"{name}_median"], row[f"{name}_lower"], row[f"{name}_upper"])
                     for name, label in (("params", "N (params)"), ("tokens", "D (tokens)"),
                                         ("tokens_per_param", "tokens/param"),
                                         ("train_flops", "training FLOPs"),
                                         ("inference_flops", "inference FLOPs"),
                                         ("total_flops", "total FLOPs"),
                                         ("chinchilla_total_flops", "Chinchilla-optimal total"))]
            for label, median, lo, hi in lines:
                print(f"  {label:<26}{_sci(median):>10}  {_band_text(lo, hi)}")
            print(f"  {'saving vs Chinchilla':<26}{100 * row['savings_median']:>9.1f}%  "
                  f"[{100 * row['savings_lower']:.1f}%, {100 * row['savings_upper']:.1f}%]")
            print(f"  P(loss <= target) for one run at the median N, D: {row['plan_prob']:.3f}")
            for unit in _cost_units(hardware) if hardware is not None else []:
                for name, label in (("train", "training"), ("total", "total")):
                    stem = f"{name}_{unit}"
                    print(f"  {label + ' ' + _UNIT_LABELS[unit]:<26}"
                          f"{_unit_text(row[stem + '_median'], unit, hardware):>10}  "
                          f"[{_unit_text(row[stem + '_lower'], unit, hardware)}, "
                          f"{_unit_text(row[stem + '_upper'], unit, hardware)}]")
    if hardware is not None:
        _print_conversion(hardware, money, note="the split is planned at the median MFU")
        if aware is not None:
            print("(Serving costs use the same chip, MFU and price as training.)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .report import assets_dir, report_format

    output = Path(args.output)
    kind = report_format(output)  # a bad suffix fails before the fit, not after
    hardware = _hardware_from_args(args)
    money = _budget_from_args(args, hardware, "--budget")
    if money is None and hardware is not None and args.budget is not None:
        from .budget import Budget

        money = Budget.from_flops(args.budget, hardware)   # answers in the hardware's units
    if money is not None:
        args.budget = money
    _check_outputs(args, output)
    if kind == "markdown":
        _check_outputs(args, assets_dir(output), directory=True)
    fit = _fit_or_load(args)
    result = None
    if args.backtest:
        from .backtest import backtest

        split = ({"cutoff_flops": args.cutoff_flops} if args.cutoff_flops is not None
                 else {"holdout_frac": args.holdout_frac})
        print(f"Backtest: refitting on the smaller runs ({split})...", file=sys.stderr)
        result = backtest(fit.runs, fit.law.name, **split, likelihood=fit.likelihood,
                          draws=args.draws, tune=args.tune, chains=args.chains,
                          random_seed=args.seed, sampler=args.sampler,
                          progressbar=not args.no_progress)
    print("Writing the report (tables and figures)...", file=sys.stderr)
    path = fit.report(output, target=args.target, budget=args.budget, budgets=args.budgets,
                      targets=args.targets, prob=args.prob, backtest=result,
                      overwrite=args.force, title=args.title)
    from .report import headline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # already listed under the report's caveats
        print(headline(fit, target=args.target, budget=args.budget, prob=args.prob))
    extra = f" and {assets_dir(output)}/" if kind == "markdown" else ""
    print(f"Wrote {path}{extra}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .datasets import load_dataset
    from .io import atomic_write
    from .plotting import plot_fit

    out_dir = Path(args.output_dir)
    figure_path = out_dir / "chinchilla_fit.png"
    if out_dir.exists() and not out_dir.is_dir():
        raise BayescaleError(f"--output-dir {str(out_dir)!r} is a file: expected a folder")
    if out_dir.is_dir():
        _check_outputs(args, figure_path)
    else:  # created after the fit; its parent must take a new folder now
        output_path(out_dir, overwrite=False, name="--output-dir", directory=True)
    runs = load_dataset("chinchilla")
    print(f"Bundled data: {len(runs)} runs of Hoffmann et al. (2022), Fig. 4, digitised by "
          "Epoch AI (Besiroglu et al. 2024).", file=sys.stderr)
    args.law, args.likelihood = "chinchilla", "student_t"
    fit = _fit_from_args(args, runs=runs)
    _print_fit(fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table says how far past the data it goes
        tables = [fit.forecast(flops=list(DEMO_BUDGETS), prob=p) for p in (0.5, 0.9)]
    largest = runs.frame["flops"].max()
    print(f"\nForecast of observed loss at the compute-optimal split "
          f"(largest run: {largest:.3g} FLOPs; beyond ~{100 * largest:.0e} is far extrapolation)")
    print(format_forecast_table(tables))
    out_dir.mkdir(parents=True, exist_ok=True)
    ax = plot_fit(fit, flops=list(DEMO_BUDGETS))
    with atomic_write(figure_path, overwrite=args.force) as tmp:
        ax.figure.savefig(tmp, format="png", dpi=130)
    print(f"\nWrote {figure_path}")
    return 0


def cmd_fit_many(args: argparse.Namespace) -> int:
    """Fit the law to every group of a CSV; save one file per fit plus an index."""
    from .many import fit_many

    if args.scheduler and args.parallel != "dask":
        raise BayescaleError("--scheduler is for --parallel dask")
    output = Path(args.output) if args.output else None
    if output is not None and output.exists() and not args.force and (
            not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists; pass --force to replace a saved collection")
    client = cluster = None
    if args.parallel == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise BayescaleError("--parallel dask needs dask.distributed: "
                                 "pip install 'bayescale[dask]'") from None
        if args.scheduler:
            client = Client(args.scheduler)
        else:
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
    groups = " and ".join(args.by)
    print(f"Fitting the {args.law} law to every {groups} of {args.runs} ({args.chains} chains x "
          f"{args.draws} draws, seed {args.seed}, {args.parallel or 'serial'})...", file=sys.stderr)
    try:
        fits = fit_many(args.runs, by=args.by, law=args.law, params=args.params_col,
                        tokens=args.tokens_col, flops=args.flops_col, loss=args.loss_col,
                        likelihood=args.likelihood, draws=args.draws, tune=args.tune,
                        chains=args.chains, random_seed=args.seed, sampler=args.sampler,
                        parallel=args.parallel, client=client,
                        max_workers=args.workers if args.parallel == "processes" else None,
                        progressbar=not args.no_progress)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if len(fits):
        table = fits.summary().pivot_table(index=fits.by, columns="parameter", values="median",
                                           sort=False)
        print(f"\nPosterior medians by group ({len(fits)} fitted)")
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    for key, failure in fits.failures.items():
        print(f"failed: {key!r}: {failure}", file=sys.stderr)
    if output is not None:
        fits.save(output, overwrite=args.force)
        print(f"\nSaved {len(fits)} fits and {len(fits.failures)} failures to {output}/ "
              "(index.json lists them)")
    return 1 if fits.failures else 0


def cmd_plan(args: argparse.Namespace) -> int:
    candidates = None
    if args.candidates is not None:
        candidates = pd.read_csv(args.candidates)
    if args.plot is not None and Path(args.plot).exists() and not args.force:
        raise FileExistsError(f"{args.plot} exists; pass --force to replace it")
    fit = _fit_or_load(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fit.plan_runs(target_flops=args.target_flops, candidates=candidates,
                              budget=args.budget, objective=args.objective, k=args.k,
                              target=args.target, n_outcomes=args.outcomes,
                              random_seed=args.seed)
    _report_warnings(caught)
    attrs = table.attrs
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from .io import atomic_write
        from .plotting import plot_plan

        ax = plot_plan(table)
        with atomic_write(Path(args.plot), overwrite=args.force) as tmp:
            ax.figure.savefig(tmp, format="png", dpi=130)
    if args.json:
        print(json.dumps({"attrs": {k: v for k, v in attrs.items()},
                          "candidates": _json_records(table)}))
        return 0
    from .report import plan_summary_lines

    for line in plan_summary_lines(table):
        print(line)
    shown = table.head(args.top)
    out = pd.DataFrame({
        "N (params)": shown["params"].map(_sci), "D (tokens)": shown["tokens"].map(_sci),
        "FLOPs": shown["flops"].map(_sci), "cost": shown["cost"].map(_sci),
        f"reduction ({attrs['units']})": [f"{r:.3g} +- {m:.1g}" for r, m in
                                          zip(shown["expected_reduction"], shown["mcse"])],
        "share": shown["relative_reduction"].map(lambda v: f"{100 * v:.1f}%"),
        "per cost": shown["per_cost"].map(_sci), "ESS": shown["ess"].map(lambda v: f"{v:.0f}"),
        "pick": shown["pick"].map(lambda v: str(int(v)) if v else "")})
    print(f"\nTop {len(shown)} of {len(table)} candidates by expected reduction per unit cost")
    print(out.to_string(index=False))
    if args.plot is not None:
        print(f"Wrote {args.plot}", file=sys.stderr)
    return 0


def _add_compare_groups_parser(sub) -> None:
    compare = sub.add_parser("compare-groups", help="which group of runs (data mix, family, "
                             "setting) has the lower loss at a budget, and how sure")
    _add_run_arguments(compare)
    _add_fit_arguments(compare)
    compare.add_argument("--group-col", default=None,
                         help="column with each run's group (required for a CSV; a saved fit "
                              "keeps its groups)")
    compare.add_argument("--pooling", choices=["partial", "none"], default="partial",
                         help="partial: one hierarchical fit (default); none: each group alone")
    compare.add_argument("--flops", type=_positive_float, default=1e22,
                         help="the budget in FLOPs (default 1e22)")
    compare.add_argument("--prob", type=_probability, default=0.9,
                         help="band of the difference (default 0.9)")
    compare.add_argument("--confident", type=_probability, default=0.9,
                         help="probability at which a ranking counts as confident (default 0.9)")
    compare.add_argument("--kind", choices=["mean", "observed"], default="mean")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fit_only = _fit_only_flags()
    compare.set_defaults(handler=cmd_compare_groups,
                         fit_only_defaults={dest: compare.get_default(dest) for dest in fit_only})


def _fit_only_flags() -> dict[str, str]:
    """compare-groups' options (dest: flag) that only a fit from a CSV uses."""
    flags = {"group_col": "--group-col", "pooling": "--pooling", "law": "--law",
             "likelihood": "--likelihood", "draws": "--draws", "tune": "--tune",
             "chains": "--chains", "seed": "--seed", "sampler": "--sampler",
             **{f"{name}_col": f"--{name}-col" for name in ("params", "tokens", "flops", "loss")}}
    for spec in _extra_input_specs():
        flags[f"{spec.name}_col"] = f"--{spec.name.replace('_', '-')}-col"
    return flags


def cmd_compare_groups(args: argparse.Namespace) -> int:
    from .data import load_runs
    from .fit import load_fit
    from .model import ScalingModel

    if Path(args.runs).suffix.lower() in (".nc", ".netcdf"):
        fit = load_fit(args.runs)
        if not fit.is_grouped:
            raise ArgumentError(f"{args.runs} is a fit without groups: run compare-groups on "
                                "the runs' CSV with --group-col <column>")
        ignored = [flag for dest, flag in _fit_only_flags().items()
                   if getattr(args, dest) != args.fit_only_defaults[dest]]
        if ignored:
            print(f"bayescale: note: {args.runs} is a saved fit: ignoring {', '.join(ignored)} "
                  "(they apply to fitting a CSV of runs)", file=sys.stderr)
    else:
        if args.group_col is None:
            raise ArgumentError("--group-col is required with a CSV of runs: the column that "
                                "names each run's group (data mix, family, setting)")
        extras = {spec.name: getattr(args, f"{spec.name}_col", None) for spec in _extra_input_specs()}
        runs = load_runs(args.runs, params=args.params_col, tokens=args.tokens_col,
                         flops=args.flops_col, loss=args.loss_col, group=args.group_col,
                         **{name: column for name, column in extras.items() if column})
        if len(runs.group_names) < 2:
            raise ArgumentError(f"{args.runs}: column {args.group_col!r} has one group "
                                f"({runs.group_names[0]!r}); compare-groups needs at least two")
        model = ScalingModel(args.law, likelihood=args.likelihood, pooling=args.pooling)
        print(f"Fitting the {args.law} law to {len(runs)} runs in {len(runs.group_names)} "
              f"groups ({args.pooling} pooling, {args.chains} chains x {args.draws} draws, "
              f"seed {args.seed})...", file=sys.stderr)
        fit = model.fit(runs, draws=args.draws, tune=args.tune, chains=args.chains,
                        random_seed=args.seed, progressbar=not args.no_progress)
    fit = _hold_inputs(fit, args)       # --unique-tokens and the like, as the other commands
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fit.compare_groups(args.flops, prob=args.prob, confident=args.confident,
                                   kind=args.kind)
    _report_warnings(caught)
    if args.json:
        _print_json({"attrs": dict(table.attrs), "pooling": fit.pooling,
                     "groups": list(fit.groups), "pairs": table})
        return 0
    level = f"{100 * table.attrs['prob']:.0f}%"
    out = pd.DataFrame({
        "A": table["group_a"].astype(str), "B": table["group_b"].astype(str),
        "P(A<B) own split": table["p_a_better"].map(lambda v: f"{v:.3f}"),
        "P(A<B) common split": table["p_a_better_common"].map(lambda v: f"{v:.3f}"),
        f"loss A-B ({level} band)": [f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]" for m, lo, hi in
                                     zip(table["diff_mean"], table["diff_lower"],
                                         table["diff_upper"])],
        "leader": table["leader"].astype(str),
        f"confident (P>={table.attrs['confident']:g}) from": table["confident_flops"].map(
            lambda v: "never (in range)" if not np.isfinite(v) else _sci(v))})
    print(f"Which group has the lower {args.kind} loss at {_sci(args.flops)} FLOPs "
          f"({fit.pooling} pooling)")
    print(out.to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayescale`` command."""
    parser = argparse.ArgumentParser(
        prog="bayescale",
        description="Bayesian scaling laws: fit runs, forecast loss with honest bands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit a law to a CSV of runs and print the parameters")
    _add_run_arguments(fit)
    _add_fit_arguments(fit)
    fit.add_argument("-o", "--output", help="save the fit to this netCDF file")
    fit.add_argument("--force", action="store_true", help="replace an existing output file")
    fit.set_defaults(handler=cmd_fit)

    forecast = sub.add_parser("forecast", help="forecast loss at budgets (from runs or a saved fit)")
    _add_run_arguments(forecast)
    _add_fit_arguments(forecast)
    forecast.add_argument("--flops", type=_positive_float, nargs="+", help="budgets in FLOPs")
    forecast.add_argument("--params", type=_positive_float, nargs="+", help="model sizes N")
    forecast.add_argument("--tokens", type=_positive_float, nargs="+", help="training tokens D")
    forecast.add_argument("--prob", type=_probability, nargs="+", default=[0.5, 0.9],
                          help="band levels (default 0.5 0.9)")
    forecast.add_argument("--kind", choices=["observed", "mean"], default="observed")
    forecast.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_budget_arguments(forecast)
    _add_metric_arguments(forecast)
    forecast.set_defaults(handler=cmd_forecast)

    back = sub.add_parser("backtest", help="fit the smaller runs, score forecasts of the larger ones")
    _add_run_arguments(back)
    _add_fit_arguments(back)
    split = back.add_mutually_exclusive_group()
    split.add_argument("--cutoff-flops", type=_positive_float,
                       help="fit on runs with at most this many FLOPs, forecast the rest")
    split.add_argument("--holdout-frac", type=_probability, default=0.2,
                       help="hold out this share of runs, the largest in compute (default 0.2)")
    back.add_argument("--prob", type=_probability, nargs="+", default=[0.5, 0.8, 0.9, 0.95],
                      help="band levels to score (default 0.5 0.8 0.9 0.95)")
    back.add_argument("--json", action="store_true", help="print JSON instead of tables")
    back.add_argument("-o", "--output", help="write the per-run table to this CSV file")
    back.add_argument("--force", action="store_true", help="replace an existing output file")
    back.set_defaults(handler=cmd_backtest)

    risk = sub.add_parser("risk", help="P(loss <= target) at budgets, compute to reach a target")
    _add_run_arguments(risk)
    _add_fit_arguments(risk)
    risk.add_argument("--target", type=_positive_float, nargs="+",
                      help="target loss(es) (required unless --metric-target is given)")
    risk.add_argument("--budget", type=_positive_float, nargs="+", help="budgets in FLOPs")
    risk.add_argument("--prob", type=_probability, nargs="+", default=[0.5, 0.8, 0.9],
                      help="confidence levels for the compute to reach a target (default 0.5 0.8 0.9)")
    risk.add_argument("--band", type=_probability, default=0.9,
                      help="band of the per-draw compute distribution (default 0.9)")
    risk.add_argument("--mode", choices=["median", "oracle"], default="median",
                      help="median: train at the posterior-median optimal N (default); "
                           "oracle: each draw at its own optimum")
    risk.add_argument("--kind", choices=["observed", "mean"], default="observed")
    risk.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_budget_arguments(risk)
    _add_metric_arguments(risk, risk=True)
    risk.set_defaults(handler=cmd_risk)

    allocate = sub.add_parser("allocate", help="compute-optimal N and D with bands; "
                                               "inference-aware allocation")
    _add_run_arguments(allocate)
    _add_fit_arguments(allocate)
    allocate.add_argument("--flops", type=_positive_float, nargs="+", help="budgets in FLOPs")
    allocate.add_argument("--target", type=_positive_float, nargs="+",
                          help="target loss(es) for the inference-aware allocation")
    allocate.add_argument("--inference-tokens", type=_nonnegative_float, nargs="+",
                          help="tokens the model will serve over its life (with --target)")
    allocate.add_argument("--prob", type=_probability, default=0.9, help="band level (default 0.9)")
    allocate.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_budget_arguments(allocate)
    allocate.set_defaults(handler=cmd_allocate)

    report = sub.add_parser("report", help="write an HTML (or Markdown) report for people who "
                                           "will not open a notebook")
    _add_run_arguments(report)
    _add_fit_arguments(report)
    report.add_argument("-o", "--output", required=True,
                        help="report.html (one self-contained file) or report.md (plus a "
                             "report_files/ folder of PNGs)")
    report.add_argument("--target", type=_positive_float, help="target loss for the risk headline")
    report.add_argument("--budget", type=_positive_float, help="the budget in FLOPs being decided")
    report.add_argument("--budgets", type=_positive_float, nargs="+",
                        help="budgets for the tables (default: decades up to 100x the largest run)")
    report.add_argument("--targets", type=_positive_float, nargs="+",
                        help="targets for the risk table (default: target and +-1%%, +-2%%)")
    report.add_argument("--prob", type=_probability, default=0.8,
                        help="confidence for the headline's compute to reach (default 0.8)")
    report.add_argument("--backtest", action="store_true",
                        help="also refit on the smaller runs and score forecasts of the rest")
    split = report.add_mutually_exclusive_group()
    split.add_argument("--cutoff-flops", type=_positive_float,
                       help="with --backtest: fit on runs with at most this many FLOPs")
    split.add_argument("--holdout-frac", type=_probability, default=0.2,
                       help="with --backtest: hold out this share of the largest runs (default 0.2)")
    report.add_argument("--title", help="title of the report")
    report.add_argument("--force", action="store_true", help="replace an existing report")
    _add_budget_arguments(report, single=True)
    report.set_defaults(handler=cmd_report)

    many = sub.add_parser("fit-many", help="fit the law to every group of runs (one fit per "
                                           "task, mix, ...); exit status 1 if a group failed")
    _add_run_arguments(many)
    _add_fit_arguments(many)
    many.add_argument("--by", nargs="+", required=True, help="column(s) naming a group")
    many.add_argument("-o", "--output", help="directory for the fits (one .nc per group "
                                             "and index.json)")
    many.add_argument("--parallel", choices=["processes", "dask"],
                      help="run the fits on a local process pool or on Dask (default: serial)")
    many.add_argument("--scheduler", metavar="ADDRESS",
                      help="with --parallel dask: the scheduler, e.g. tcp://10.0.0.5:8786 "
                           "(default: a local cluster)")
    many.add_argument("--workers", type=_positive_int, default=None,
                      help="processes of the local pool or cluster (default: the cores)")
    many.add_argument("--force", action="store_true", help="replace a collection saved there")
    many.set_defaults(handler=cmd_fit_many)

    plan = sub.add_parser("plan", help="which pilot runs to train first: expected reduction of "
                                       "the forecast's uncertainty per FLOP")
    _add_run_arguments(plan)
    _add_fit_arguments(plan)
    plan.add_argument("--target-flops", type=_positive_float, required=True,
                      help="budget in FLOPs of the big run the pilots should inform")
    plan.add_argument("--budget", type=_positive_float,
                      help="most a pilot may cost, and the total for --k pilots "
                           "(default: target-flops / 100)")
    plan.add_argument("--k", type=int, default=1, help="pilots to pick greedily (default 1)")
    plan.add_argument("--objective", choices=["band", "prob", "split"], default="band",
                      help="band: 90%% band of loss at the target; prob: uncertainty of "
                           "P(loss <= --target); split: band of tokens per parameter")
    plan.add_argument("--target", type=_positive_float, help="target loss (for --objective prob)")
    plan.add_argument("--candidates", help="CSV of runnable pilots: params, tokens, optional cost")
    plan.add_argument("--outcomes", type=int, default=100,
                      help="simulated outcomes per candidate (default 100)")
    plan.add_argument("--top", type=int, default=10, help="candidates to print (default 10)")
    plan.add_argument("--plot", help="also write the plan figure to this PNG")
    plan.add_argument("--force", action="store_true", help="replace an existing --plot file")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    plan.set_defaults(handler=cmd_plan)

    _add_compare_groups_parser(sub)

    demo = sub.add_parser("demo", help="fit the bundled Chinchilla runs, print tables, save a PNG")
    _add_fit_arguments(demo)
    demo.add_argument("--output-dir", default="demo_output", help="where the PNG goes")
    demo.add_argument("--force", action="store_true", help="replace existing demo outputs")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayescale`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (BayescaleError, OSError, ValueError) as exc:
        print(f"bayescale: error: {exc}", file=sys.stderr)
        return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A terminal user needs the message, not the source line of the library that raised it.
    print(f"bayescale: warning: {message}", file=sys.stderr if file is None else file)


def run() -> None:
    """Console-script entry point: :func:`main` with warnings printed as one-line messages."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        status = main()
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    run()
