"""Native evaluation of small dense ONNX graphs, one feature row at a time.

A model file is read with the ``onnx`` package and lowered to a short
program over one float64 work vector: dense layers (``MatMul``, ``Gemm``,
``LinearClassifier``, ``LinearRegressor``), element-wise affine steps
(``Add``/``Sub``/``Mul``/``Div`` by a constant, ``Scaler``), the sum of two
tensors (``Add``), activations (``Relu``, ``Tanh``, ``Sigmoid``,
``Softmax``, the classifiers' ``SOFTMAX``/``LOGISTIC`` post-transforms) and
``Normalizer`` (L1, L2, MAX). ``Identity``, ``Cast`` to float, ``Reshape``
and ``Flatten`` of a row are aliases. One numba kernel
(``@njit(cache=True)``) runs the program; the machine code is cached on
disk after the first compile.

Any other op, a constant that does not broadcast along a row, or a label
output that the graph uses raises :class:`Unsupported`; the caller
(:class:`~flashmm.predict.onnx_model.OnnxPredictor`) then keeps onnxruntime.
The caller also checks the program against onnxruntime on a probe batch at
load and keeps onnxruntime when they differ by more than a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

AFFINE, ELEM, ADD2, RELU, TANH, SIGMOID, SOFTMAX, NORM_L1, NORM_L2, NORM_MAX = range(10)

SUPPORTED_OPS = (
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "Scaler",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
)


_ACTIVATIONS = {"Relu": RELU, "Tanh": TANH, "Sigmoid": SIGMOID, "Softmax": SOFTMAX}


class Unsupported(Exception):
    """The graph has something the native program does not cover."""


def _kernel_py(prog: np.ndarray, params: np.ndarray, work: np.ndarray, x: np.ndarray) -> None:
    """Run ``prog`` on the row ``x`` (copied to ``work[0:len(x)]``)."""
    for i in range(x.shape[0]):
        work[i] = x[i]
    for k in range(prog.shape[0]):
        code = prog[k, 0]
        a = prog[k, 1]
        b = prog[k, 2]
        d = prog[k, 3]
        n = prog[k, 4]
        m = prog[k, 5]
        p0 = prog[k, 6]
        p1 = prog[k, 7]
        if code == AFFINE:  # d[j] = bias[j] + sum_i a[i] * W[i, j]
            # each output summed in a local, in input order (the same additions as
            # summing into d row by row, without a store per term); up to 4 outputs
            # side by side, so their chains of additions overlap
            if 0 < m <= 4:
                s0 = params[p1]
                s1 = params[p1 + 1] if m > 1 else 0.0
                s2 = params[p1 + 2] if m > 2 else 0.0
                s3 = params[p1 + 3] if m > 3 else 0.0
                for i in range(n):
                    xi = work[a + i]
                    w = p0 + i * m
                    s0 += xi * params[w]
                    if m > 1:
                        s1 += xi * params[w + 1]
                        if m > 2:
                            s2 += xi * params[w + 2]
                            if m > 3:
                                s3 += xi * params[w + 3]
                work[d] = s0
                if m > 1:
                    work[d + 1] = s1
                if m > 2:
                    work[d + 2] = s2
                if m > 3:
                    work[d + 3] = s3
            elif m > 4:
                for j in range(m):
                    acc = params[p1 + j]
                    base = p0 + j
                    for i in range(n):
                        acc += work[a + i] * params[base + i * m]
                    work[d + j] = acc
        elif code == ELEM:  # d[i] = (a[i] - off[i]) * scale[i]
            for i in range(n):
                work[d + i] = (work[a + i] - params[p0 + i]) * params[p1 + i]
        elif code == ADD2:
            for i in range(n):
                work[d + i] = work[a + i] + work[b + i]
        elif code == RELU:
            for i in range(n):
                v = work[a + i]
                work[d + i] = v if v > 0.0 else 0.0
        elif code == TANH:
            for i in range(n):
                work[d + i] = np.tanh(work[a + i])
        elif code == SIGMOID:
            for i in range(n):
                v = work[a + i]
                if v >= 0.0:
                    work[d + i] = 1.0 / (1.0 + np.exp(-v))
                else:
                    e = np.exp(v)
                    work[d + i] = e / (1.0 + e)
        elif code == SOFTMAX:
            top = work[a]
            for i in range(1, n):
                if work[a + i] > top:
                    top = work[a + i]
            s = 0.0
            for i in range(n):
                e = np.exp(work[a + i] - top)
                work[d + i] = e
                s += e
            for i in range(n):
                work[d + i] /= s
        else:  # NORM_L1, NORM_L2, NORM_MAX
            s = 0.0
            for i in range(n):
                v = work[a + i]
                if code == NORM_L1:
                    s += abs(v)
                elif code == NORM_L2:
                    s += v * v
                elif abs(v) > s:
                    s = abs(v)
            if code == NORM_L2:
                s = np.sqrt(s)
            for i in range(n):
                work[d + i] = work[a + i] / s if s > 0.0 else 0.0


_KERNEL: Callable[..., None] | None = None


def kernel() -> Callable[..., None]:
    """The compiled kernel (numba, cached on disk); raises :class:`Unsupported`
    when numba is not installed."""
    global _KERNEL
    if _KERNEL is None:
        try:
            from numba import njit
        except ImportError as exc:
            raise Unsupported(f"numba not available ({exc})") from None
        from flashmm.native.cachedir import usable

        _KERNEL = njit(cache=usable(), nogil=True)(_kernel_py)
    return _KERNEL


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class NativeProgram:
    """A lowered graph: ``prog`` (int64 rows of 8), ``params`` (float64), the
    work vector and where each graph output lies in it."""

    def __init__(self, path: str | Path, input_name: str, width: int) -> None:
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError as exc:
            raise Unsupported(f"the onnx package is not installed ({exc})") from None
        m = onnx.load(str(path))
        g = m.graph
        consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer
        }
        for node in g.node:
            if node.op_type == "Constant":
                v = onnx.helper.get_attribute_value(node.attribute[0])
                consts[node.output[0]] = numpy_helper.to_array(v).astype(np.float64)
        # name -> (offset in the work vector, width)
        self._where: dict[str, tuple[int, int]] = {input_name: (0, width)}
        self._size = width
        self._rows: list[list[int]] = []
        self._params: list[np.ndarray] = []
        self._nparams = 0
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for node in g.node:
            if node.op_type == "Constant":
                continue
            self._lower(node, consts, used)
        self.outputs: dict[str, tuple[int, int]] = {}
        for o in g.output:
            if o.name not in self._where:
                raise Unsupported(f"output {o.name} is not computed from {input_name}")
            self.outputs[o.name] = self._where[o.name]
        self.prog = np.asarray(self._rows, dtype=np.int64).reshape(-1, 8)
        self.params = (
            np.concatenate(self._params) if self._params else np.zeros(1, dtype=np.float64)
        )
        self.work = np.zeros(self._size, dtype=np.float64)

    # --- lowering ----------------------------------------------------------
    def _param(self, arr: np.ndarray) -> int:
        off = self._nparams
        flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
        self._params.append(flat)
        self._nparams += len(flat)
        return off

    def _out(self, name: str, width: int) -> int:
        off = self._size
        self._size += width
        self._where[name] = (off, width)
        return off

    def _src(self, name: str, node: Any) -> tuple[int, int]:
        if name not in self._where:
            raise Unsupported(f"{node.op_type} reads {name!r}, not a row computed from the input")
        return self._where[name]

    def _row_const(self, c: np.ndarray, n: int, node: Any) -> np.ndarray:
        if c.size == 1:
            return np.full(n, float(c.reshape(-1)[0]))
        if c.shape[-1] == n and c.size == n:
            return c.reshape(-1)
        raise Unsupported(f"{node.op_type} constant of shape {c.shape} on a row of {n}")

    def _affine(self, a: int, n: int, w: np.ndarray, b: np.ndarray, out: str) -> None:
        m = w.shape[1]
        if w.shape[0] != n:
            raise Unsupported(f"weights of shape {w.shape} on a row of {n}")
        d = self._out(out, m)
        self._rows.append([AFFINE, a, -1, d, n, m, self._param(w), self._param(b)])

    def _elem(self, a: int, n: int, off: np.ndarray, scale: np.ndarray, out: str) -> None:
        """``out[i] = (a[i] - off[i]) * scale[i]``."""
        d = self._out(out, n)
        self._rows.append([ELEM, a, -1, d, n, n, self._param(off), self._param(scale)])

    def _unary(self, code: int, a: int, n: int, out: str) -> None:
        d = self._out(out, n)
        self._rows.append([code, a, -1, d, n, n, 0, 0])

    def _lower(self, node: Any, consts: dict[str, np.ndarray], used: set[str]) -> None:
        op = node.op_type
        at = _attrs(node)
        ins = list(node.input)
        outs = list(node.output)
        if op in ("Identity", "Reshape", "Flatten", "Cast"):
            if op == "Flatten" and int(at.get("axis", 1)) != 1:
                raise Unsupported("Flatten with axis != 1")
            if op == "Cast" and int(at.get("to", 1)) not in (1, 11):  # float, double
                raise Unsupported(f"Cast to type {at.get('to')}")
            self._where[outs[0]] = self._src(ins[0], node)
        elif op == "MatMul":
            if ins[1] not in consts:
                raise Unsupported("MatMul of two computed tensors")
            a, n = self._src(ins[0], node)
            w = consts[ins[1]]
            if w.ndim != 2:
                raise Unsupported(f"MatMul weights of rank {w.ndim}")
            self._affine(a, n, w, np.zeros(w.shape[1]), outs[0])
        elif op == "Gemm":
            if int(at.get("transA", 0)) or ins[1] not in consts:
                raise Unsupported("Gemm with transA or computed weights")
            a, n = self._src(ins[0], node)
            w = consts[ins[1]]
            w = w.T if int(at.get("transB", 0)) else w
            w = w * float(at.get("alpha", 1.0))
            m = w.shape[1]
            if len(ins) > 2 and ins[2]:
                if ins[2] not in consts:
                    raise Unsupported("Gemm with a computed bias")
                b = self._row_const(consts[ins[2]], m, node) * float(at.get("beta", 1.0))
            else:
                b = np.zeros(m)
            self._affine(a, n, w, b, outs[0])
        elif op in ("Add", "Sub", "Mul", "Div"):
            x, c = ins
            if x in consts and c in consts:
                raise Unsupported(f"{op} of two constants")
            if op == "Add" and x not in consts and c not in consts:
                a, n = self._src(x, node)
                a2, n2 = self._src(c, node)
                if n != n2:
                    raise Unsupported(f"Add of rows of {n} and {n2}")
                d = self._out(outs[0], n)
                self._rows.append([ADD2, a, a2, d, n, n, 0, 0])
                return
            if x in consts:
                if op not in ("Add", "Mul"):  # c - x, c / x
                    if op == "Sub":
                        a, n = self._src(c, node)
                        k = self._row_const(consts[x], n, node)
                        self._elem(a, n, k, -np.ones(n), outs[0])  # (x - c) * -1
                        return
                    raise Unsupported(f"{op} with the constant first")
                x, c = c, x
            if c not in consts:
                raise Unsupported(f"{op} of two computed tensors")
            a, n = self._src(x, node)
            k = self._row_const(consts[c], n, node)
            off, scale = {
                "Add": (-k, np.ones(n)),
                "Sub": (k, np.ones(n)),
                "Mul": (np.zeros(n), k),
                "Div": (np.zeros(n), 1.0 / k),
            }[op]
            self._elem(a, n, off, scale, outs[0])
        elif op in _ACTIVATIONS:
            if op == "Softmax" and int(at.get("axis", -1)) not in (-1, 1):
                raise Unsupported(f"Softmax on axis {at.get('axis')}")
            a, n = self._src(ins[0], node)
            self._unary(_ACTIVATIONS[op], a, n, outs[0])
        elif op == "Scaler":
            a, n = self._src(ins[0], node)
            off = self._row_const(np.asarray(at.get("offset", [0.0]), dtype=np.float64), n, node)
            sc = self._row_const(np.asarray(at.get("scale", [1.0]), dtype=np.float64), n, node)
            self._elem(a, n, off, sc, outs[0])
        elif op in ("LinearClassifier", "LinearRegressor"):
            a, n = self._src(ins[0], node)
            coef = np.asarray(at["coefficients"], dtype=np.float64)
            bias = np.asarray(at.get("intercepts", []), dtype=np.float64)
            if coef.size % n:
                raise Unsupported(f"{op} with {coef.size} coefficients on a row of {n}")
            m = coef.size // n
            if bias.size == 0:
                bias = np.zeros(m)
            if bias.size != m:
                raise Unsupported(f"{op} with {bias.size} intercepts for {m} outputs")
            post = str(at.get("post_transform", "NONE"))
            if op == "LinearClassifier":
                labels = at.get("classlabels_ints") or at.get("classlabels_strings") or []
                if len(labels) != m:  # the binary form (one row of weights) differs
                    raise Unsupported(f"LinearClassifier with {len(labels)} classes, {m} rows")
                if outs[0] in used:
                    raise Unsupported("LinearClassifier label output is used")
                target = outs[1]
            else:
                if int(at.get("targets", 1)) != m:
                    raise Unsupported("LinearRegressor targets do not match its coefficients")
                target = outs[0]
            if post == "NONE":
                self._affine(a, n, coef.reshape(m, n).T, bias, target)
            elif post in ("SOFTMAX", "LOGISTIC"):
                self._affine(a, n, coef.reshape(m, n).T, bias, target + "\0raw")
                s, _ = self._where[target + "\0raw"]
                self._unary(SOFTMAX if post == "SOFTMAX" else SIGMOID, s, m, target)
            else:
                raise Unsupported(f"{op} post_transform {post}")
        elif op == "Normalizer":
            a, n = self._src(ins[0], node)
            norm = str(at.get("norm", "MAX"))
            codes = {"L1": NORM_L1, "L2": NORM_L2, "MAX": NORM_MAX}
            if norm not in codes:
                raise Unsupported(f"Normalizer norm {norm}")
            self._unary(codes[norm], a, n, outs[0])
        else:
            raise Unsupported(f"op {op} (native ops: {', '.join(SUPPORTED_OPS)})")

    # --- evaluation ----------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Evaluate one float32 row; the outputs are read from the returned work vector."""
        kernel()(self.prog, self.params, self.work, x)
        return self.work

    def run_rows(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for each row of ``X`` (row by row through the kernel)."""
        X = np.ascontiguousarray(X, dtype=np.float32)  # the model's input type
        res = {k: np.empty((len(X), w)) for k, (_, w) in self.outputs.items()}
        run = kernel()
        for r in range(len(X)):
            run(self.prog, self.params, self.work, X[r])
            for k, (off, w) in self.outputs.items():
                res[k][r] = self.work[off : off + w]
        return res
