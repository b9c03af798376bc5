"""Derive a law's fast code from its one formula: trace it, differentiate it, emit numba source.

A law writes its formula once, against an array namespace ``xp`` (numpy or
``pytensor.tensor``). Here the same function runs on a tracing namespace, :data:`TRACER`,
whose values are nodes of an expression graph. From that graph :func:`emit_log_loss` writes
Python source for the law's log loss at one run and its gradient in the law's parameters by
reverse-mode differentiation; :mod:`bayescale._fastlogp` and :mod:`bayescale.pointfit` wrap
it in their loops and compile it with numba (``cache=True``, so a new process loads machine
code instead of compiling).

Parts of the graph that do not depend on the run (``log E`` from ``E_fraction``, say) are
computed once per evaluation, outside the loop over runs, and their adjoints summed over
runs. A formula that uses an operation the tracer does not know raises
:class:`NotTraceable`; callers fall back to the slower PyMC route and say so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["Node", "TRACER", "NotTraceable", "trace", "emit_log_loss", "load_generated",
           "cache_dir"]


class NotTraceable(Exception):
    """The formula uses something the tracer cannot turn into code."""


class Node:
    """One value of a traced formula: an operation on other nodes, a leaf, or a constant."""

    __slots__ = ("op", "args", "value", "graph", "uses_x", "uses_theta", "id")
    __array_ufunc__ = None  # numpy scalars defer to our reflected operators

    def __init__(self, graph: "_Graph", op: str, args: tuple["Node", ...], value: Any = None):
        self.op, self.args, self.value, self.graph = op, args, value, graph
        self.uses_x = op == "x" or any(a.uses_x for a in args)
        self.uses_theta = op == "theta" or any(a.uses_theta for a in args)
        self.id = len(graph.nodes)

    # arithmetic -------------------------------------------------------------------------
    def _wrap(self, other: Any) -> "Node":
        return self.graph.wrap(other)

    def __add__(self, other): return self.graph.op("add", self, self._wrap(other))
    def __radd__(self, other): return self.graph.op("add", self._wrap(other), self)
    def __sub__(self, other): return self.graph.op("sub", self, self._wrap(other))
    def __rsub__(self, other): return self.graph.op("sub", self._wrap(other), self)
    def __mul__(self, other): return self.graph.op("mul", self, self._wrap(other))
    def __rmul__(self, other): return self.graph.op("mul", self._wrap(other), self)
    def __truediv__(self, other): return self.graph.op("div", self, self._wrap(other))
    def __rtruediv__(self, other): return self.graph.op("div", self._wrap(other), self)
    def __pow__(self, other): return self.graph.op("pow", self, self._wrap(other))
    def __rpow__(self, other): return self.graph.op("pow", self._wrap(other), self)
    def __neg__(self): return self.graph.op("neg", self)
    def __pos__(self): return self

    def __bool__(self):
        raise NotTraceable("the formula branches on a value (if/and/or on a parameter or "
                           "input); write it with xp.maximum / xp.minimum instead")

    def __float__(self):
        raise NotTraceable("the formula converts a parameter or input to a Python float")

    def __getattr__(self, name):  # e.g. .shape, .astype: array methods the tracer lacks
        if name.startswith("__"):  # protocol probes (copy, numpy, ...) must see "absent"
            raise AttributeError(name)
        raise NotTraceable(f"the formula uses the array attribute .{name}")


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._seen: dict[tuple, Node] = {}

    def _add(self, op: str, args: tuple[Node, ...], value: Any = None) -> Node:
        key = (op, tuple(a.id for a in args), value)
        node = self._seen.get(key)
        if node is None:
            node = Node(self, op, args, value)
            self.nodes.append(node)
            self._seen[key] = node
        return node

    def wrap(self, value: Any) -> Node:
        if isinstance(value, Node):
            if value.graph is not self:
                raise NotTraceable("a node from another trace")
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise NotTraceable(f"the formula combines a parameter with {type(value).__name__}") from None
        return self._add("const", (), number)

    def leaf(self, kind: str, index: int, name: str) -> Node:
        return self._add(kind, (), (index, name))

    def op(self, name: str, *args: Node) -> Node:
        if all(a.op == "const" for a in args):
            return self.wrap(_FOLD[name](*(a.value for a in args)))
        if name == "log" and args[0].op == "exp":  # log(exp(x)) = x, without overflow
            return args[0].args[0]
        return self._add(name, tuple(args))


def _pow(a: float, b: float) -> float:
    return a ** b


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b, "pow": _pow, "neg": lambda a: -a, "exp": math.exp,
         "log": math.log, "log1p": math.log1p, "expm1": math.expm1, "sqrt": math.sqrt,
         "abs": abs, "maximum": max, "minimum": min, "tanh": math.tanh,
         "logaddexp": lambda a, b: max(a, b) + math.log1p(math.exp(-abs(a - b))),
         "sigmoid": lambda a: 1.0 / (1.0 + math.exp(-a))}


class _Tracer:
    """The ``xp`` namespace of a trace: the elementwise functions a formula may use."""

    pi = math.pi
    e = math.e
    inf = math.inf

    @staticmethod
    def _graph(*args: Any) -> _Graph:
        for a in args:
            if isinstance(a, Node):
                return a.graph
        raise NotTraceable("a function of constants only")

    def _unary(name: str):  # noqa: N805 - a factory used in the class body
        def function(self, x):
            if not isinstance(x, Node):
                return _FOLD[name](float(x))
            return x.graph.op(name, x)
        function.__name__ = name
        return function

    def _binary(name: str):  # noqa: N805
        def function(self, x, y):
            if not isinstance(x, Node) and not isinstance(y, Node):
                return _FOLD[name](float(x), float(y))
            graph = self._graph(x, y)
            return graph.op(name, graph.wrap(x), graph.wrap(y))
        function.__name__ = name
        return function

    exp = _unary("exp")
    log = _unary("log")
    log1p = _unary("log1p")
    expm1 = _unary("expm1")
    sqrt = _unary("sqrt")
    abs = _unary("abs")
    tanh = _unary("tanh")
    sigmoid = _unary("sigmoid")
    maximum = _binary("maximum")
    minimum = _binary("minimum")
    logaddexp = _binary("logaddexp")
    power = _binary("pow")

    def square(self, x):
        return x * x

    def log_sum_exp(self, terms):
        """log Σ exp(term): one node, so its gradient is the softmax (no shift to cancel)."""
        graph = self._graph(*terms)
        nodes = tuple(graph.wrap(t) for t in terms)
        return graph._add("lse", nodes)

    def __getattr__(self, name: str):
        raise NotTraceable(f"the formula calls xp.{name}, which the fast path does not know "
                           "(it knows exp, log, log1p, expm1, sqrt, abs, tanh, sigmoid, "
                           "maximum, minimum, logaddexp, power, square)")


TRACER = _Tracer()


def trace(law: Any, log_params: Sequence[str] = ()) -> tuple[_Graph, Node, list[str], list[str], list[str]]:
    """Run ``law.log_loss`` on the tracer.

    Parameters named in ``log_params`` enter as exp of their leaf, so the code's coordinate
    (and gradient) is their log (``log(exp(x))`` simplifies to x, so nothing overflows).
    Returns the graph, its output node and the names of the parameters, reference values
    and inputs, in the order the emitted code numbers them.
    """
    graph = _Graph()
    theta_names = list(law.parameter_domains)
    ref_names = list(law.reference_names())
    input_names = list(law.inputs)
    theta = {n: graph.leaf("theta", i, n) for i, n in enumerate(theta_names)}
    for name in log_params:
        theta[name] = graph.op("exp", theta[name])
    ref = {n: graph.leaf("ref", i, n) for i, n in enumerate(ref_names)}
    log_x = {n: graph.leaf("x", i, n) for i, n in enumerate(input_names)}
    try:
        out = law.log_loss(theta, log_x, ref, TRACER)
    except NotTraceable:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, ZeroDivisionError) as exc:
        raise NotTraceable(f"{type(exc).__name__}: {exc}") from exc
    return graph, graph.wrap(out), theta_names, ref_names, input_names


def _forward(node: Node, v) -> str:
    a = [v(x) for x in node.args]
    op = node.op
    if op == "add": return f"{a[0]} + {a[1]}"
    if op == "sub": return f"{a[0]} - {a[1]}"
    if op == "mul": return f"{a[0]} * {a[1]}"
    if op == "div": return f"{a[0]} / {a[1]}"
    if op == "neg": return f"-{a[0]}"
    if op == "pow": return f"{a[0]} ** {a[1]}"
    if op in ("exp", "log", "log1p", "expm1", "sqrt", "tanh"): return f"math.{op}({a[0]})"
    if op == "abs": return f"abs({a[0]})"
    if op == "maximum": return f"max({a[0]}, {a[1]})"
    if op == "minimum": return f"min({a[0]}, {a[1]})"
    if op == "sigmoid": return f"1.0 / (1.0 + math.exp(-{a[0]}))"
    if op == "logaddexp":
        return f"max({a[0]}, {a[1]}) + math.log1p(math.exp(-abs({a[0]} - {a[1]})))"
    raise NotTraceable(f"no code for {op}")


def _forward_lines(node: Node, v) -> list[str]:
    """Statements computing ``node`` (several for log-sum-exp)."""
    if node.op != "lse":
        return [f"{v(node)} = {_forward(node, v)}"]
    a = [v(x) for x in node.args]
    name = v(node)
    lines = [f"{name}_top = max({', '.join(a)})" if len(a) > 1 else f"{name}_top = {a[0]}"]
    lines += [f"{name}_e{i} = math.exp({x} - {name}_top)" for i, x in enumerate(a)]
    lines.append(f"{name}_sum = {' + '.join(f'{name}_e{i}' for i in range(len(a)))}")
    lines.append(f"{name} = {name}_top + math.log({name}_sum)")
    lines.append(f"{name}_inv = 1.0 / {name}_sum")
    return lines


def _backward(node: Node, v, g: str) -> list[tuple[int, str]]:
    """(argument position, contribution to its adjoint) for adjoint ``g`` of ``node``."""
    a = [v(x) for x in node.args]
    out = v(node)
    op = node.op
    if op == "add": return [(0, g), (1, g)]
    if op == "sub": return [(0, g), (1, f"-{g}")]
    if op == "mul": return [(0, f"{g} * {a[1]}"), (1, f"{g} * {a[0]}")]
    if op == "div": return [(0, f"{g} / {a[1]}"), (1, f"-{g} * {out} / {a[1]}")]
    if op == "neg": return [(0, f"-{g}")]
    if op == "pow":
        terms = [(0, f"{g} * {a[1]} * {a[0]} ** ({a[1]} - 1.0)")]
        if node.args[1].uses_theta:
            terms.append((1, f"{g} * {out} * math.log({a[0]})"))
        return terms
    if op == "exp": return [(0, f"{g} * {out}")]
    if op == "log": return [(0, f"{g} / {a[0]}")]
    if op == "log1p": return [(0, f"{g} / (1.0 + {a[0]})")]
    if op == "expm1": return [(0, f"{g} * ({out} + 1.0)")]
    if op == "sqrt": return [(0, f"{g} * 0.5 / {out}")]
    if op == "tanh": return [(0, f"{g} * (1.0 - {out} * {out})")]
    if op == "sigmoid": return [(0, f"{g} * {out} * (1.0 - {out})")]
    if op == "abs": return [(0, f"({g} if {a[0]} >= 0.0 else -{g})")]
    if op == "maximum":
        return [(0, f"({g} if {a[0]} >= {a[1]} else 0.0)"), (1, f"(0.0 if {a[0]} >= {a[1]} else {g})")]
    if op == "minimum":
        return [(0, f"({g} if {a[0]} <= {a[1]} else 0.0)"), (1, f"(0.0 if {a[0]} <= {a[1]} else {g})")]
    if op == "logaddexp":
        return [(0, f"{g} * math.exp({a[0]} - {out})"), (1, f"{g} * math.exp({a[1]} - {out})")]
    if op == "lse":
        return [(i, f"{g} * {out}_e{i} * {out}_inv") for i in range(len(a))]
    raise NotTraceable(f"no derivative for {op}")


def emit_log_loss(law: Any, log_params: Sequence[str] = (), *, simd: bool = False,
                  full_simd: bool = False) -> dict[str, Any]:
    """Source code pieces for the law's log loss and its gradient.

    ``log_params``: parameters whose coordinate ``th[k]`` is their log (see :func:`trace`).
    ``simd``: the per-run lines call :func:`bayescale._vecmath.vexp` / ``vlog`` (as ``_vexp``
    and ``_vlog``, which the caller's module imports) instead of ``math.exp`` / ``math.log``,
    so that a loop over runs without other calls vectorises (same values to ~1 ulp).
    ``full_simd``: as ``simd``, and ``math.expm1`` / ``math.log1p`` become ``_vexpm1`` /
    ``_vlog1p`` too, so the per-run lines call no libm function at all (within a few ulp).

    Returns a dict with

    - ``theta``, ``refs``, ``inputs``: names in code order (``th[k]``, ``rf[k]``, and input
      k of run j as ``x<k>[j]``: the caller binds arrays ``x0``, ``x1``, ... and loops ``j``);
    - ``setup``: lines computing the run-independent values from ``th`` and ``rf`` and
      zeroing their adjoints (before the loop over runs);
    - ``point``: lines computing ``mu`` at run ``j`` (inside the loop);
    - ``point_grad``: lines, after ``dmu`` (d objective / d mu) is known, adding that run's
      share to the adjoints (inside the loop);
    - ``finish``: lines turning the accumulated adjoints into ``gth[k]``
      (d objective / d theta[k]; ``gth`` is zeroed by the caller).
    """
    graph, out, theta_names, ref_names, input_names = trace(law, log_params)
    if not out.uses_theta:
        raise NotTraceable("the formula does not depend on its parameters")
    # Only nodes the output depends on, in graph (topological) order.
    needed: set[int] = set()
    stack = [out]
    while stack:
        node = stack.pop()
        if node.id in needed:
            continue
        needed.add(node.id)
        stack.extend(node.args)
    order = [n for n in graph.nodes if n.id in needed]

    def v(node: Node) -> str:
        if node.op == "const":
            return repr(float(node.value))
        if node.op == "theta":
            return f"th[{node.value[0]}]"
        if node.op == "ref":
            return f"rf[{node.value[0]}]"
        if node.op == "x":
            return f"x{node.value[0]}[j]"
        return f"v{node.id}"

    def adj(node: Node) -> str:
        return f"g{node.id}"

    setup, point, point_grad, finish = [], [], [], []
    for node in order:
        if node.op in ("const", "theta", "ref", "x"):
            continue
        (point if node.uses_x else setup).extend(_forward_lines(node, v))
    point.append(f"mu = {v(out)}")
    # Adjoints: loop nodes get fresh ones per run; setup nodes (and theta) accumulate.
    differentiable = [n for n in order if n.uses_theta and n.op not in ("const", "ref", "x")]
    for node in differentiable:
        if not node.uses_x:
            setup.append(f"{adj(node)} = 0.0")
    loop_nodes = [n for n in differentiable if n.uses_x]
    for node in loop_nodes:
        point_grad.append(f"{adj(node)} = 0.0")
    point_grad.append(f"{adj(out)} += dmu")
    for node in reversed(loop_nodes):
        for position, term in _backward(node, v, adj(node)):
            arg = node.args[position]
            if arg.uses_theta:
                point_grad.append(f"{adj(arg)} += {term}")
    for node in reversed([n for n in differentiable if not n.uses_x]):
        if node.op == "theta":
            continue
        for position, term in _backward(node, v, adj(node)):
            arg = node.args[position]
            if arg.uses_theta:
                finish.append(f"{adj(arg)} += {term}")
    for node in differentiable:
        if node.op == "theta":
            finish.append(f"gth[{node.value[0]}] += {adj(node)}")
    if out.op == "theta" or not out.uses_x:
        pass  # handled: its adjoint is a setup adjoint accumulating dmu
    if simd or full_simd:
        point, point_grad = _simd(point, full_simd), _simd(point_grad, full_simd)
    return {"theta": theta_names, "refs": ref_names, "inputs": input_names, "setup": setup,
            "point": point, "point_grad": point_grad, "finish": finish}


def _simd(lines: list[str], full: bool = False) -> list[str]:
    # libm calls block vectorisation; the polynomial versions do not ("math.log(" is not log1p)
    names = {"math.exp(": "_vexp(", "math.log(": "_vlog("}
    if full:
        names.update({"math.expm1(": "_vexpm1(", "math.log1p(": "_vlog1p("})
    out = []
    for line in lines:
        for libm, vector in names.items():
            line = line.replace(libm, vector)
        out.append(line)
    return out


# -- generated modules: written once to a cache folder, compiled by numba with cache=True --

_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}


def cache_dir() -> Path:
    """Where generated kernels live: $BAYESCALE_CACHE_DIR, else the user cache folder."""
    root = os.environ.get("BAYESCALE_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base) / "bayescale"
    path = path / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".probe"
        probe.write_text("")
        probe.unlink()
    except OSError:
        path = Path(tempfile.gettempdir()) / f"bayescale-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "kernels"
        path.mkdir(parents=True, exist_ok=True)
    return path


def source_digest(source: str, package: Path | None = None) -> str:
    """Hash of generated source, the numba version and the bayescale modules it imports.

    numba's cache checks only the generated file, not the functions it inlines or calls from
    bayescale modules (``vexp``, ``_prior``, ...), so their source is part of the key:
    a change there gives new file names and a fresh compilation, never stale machine code.
    """
    import numba

    package = Path(__file__).resolve().parent if package is None else package
    imported = sorted(set(re.findall(r"^from bayescale\.(\w+) import", source, re.M)))
    key = source + numba.__version__ + "".join(
        (package / f"{name}.py").read_text() for name in imported if (package / f"{name}.py").exists())
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_generated(prefix: str, source: str) -> ModuleType:
    """Import generated source as a module, writing it to the cache folder first.

    The file name carries :func:`source_digest`, so a changed law (or a changed bayescale
    function it uses) gets a new file and numba's cache, keyed by file, never serves stale code.
    """
    name = f"_bayescale_{prefix}_{source_digest(source)}"
    with _lock:
        module = _loaded.get(name)
        if module is not None:
            return module
        path = cache_dir() / f"{name}.py"
        if not path.exists() or path.read_text() != source:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _loaded[name] = module
        return module


def indent(lines: Sequence[str], depth: int) -> str:
    pad = "    " * depth
    return "\n".join(pad + line for line in lines) if lines else pad + "pass"
