"""What a case is, and the graph it writes its nodes into."""
import dataclasses
from typing import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# The largest |probability difference| an agreeing case may show on any class of any
# image. Both sides compute in f32; what remains is summation order, far below this.
TOLERANCE = 1e-4
ML = "ai.onnx.ml"
AGREE = "agree"
REFUSE = "refuse"


@dataclasses.dataclass(frozen=True)
class Case:
    """One model around one operator. `build(net)` adds the nodes after the input `x`
    and returns the name of the float tensor that the Flatten and Gemm turn into logits.
    `attributes` are the ones set to non-default values on the nodes of `op`; `tag`
    tells apart cases of the same form; `shown` replaces the attributes in the name."""

    op: str
    attributes: tuple
    build: Callable
    opset: int = 13
    expect: str = AGREE
    domain: str = ""
    ml_opset: int = 0
    tolerance: float = TOLERANCE
    tag: str = ""
    shown: str = ""

    @property
    def name(self):
        attrs = self.shown or "+".join(self.attributes) or "default"
        version = self.ml_opset if self.domain else self.opset
        return f"{self.op}-{version}-{attrs}" + (f"-{self.tag}" if self.tag else "")


class Net:
    """The nodes and constants of one case's graph, with fresh names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.count = 0

    def fresh(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value, dtype=np.float32):
        name = self.fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, *values):
        return self.const(list(values), np.int64)

    def normal(self, *shape, scale=0.5):
        return self.const(self.rng.normal(0, scale, shape))

    def add(self, op, *inputs, outputs=1, domain="", **attrs):
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, domain=domain, **attrs))
        return names[0] if outputs == 1 else names

    def features(self, channels=4):
        """A Conv of its default form: [N, channels, 26, 26], values of both signs."""
        return self.add("Conv", "x", self.normal(channels, 1, 3, 3), self.normal(channels))

    def to_float(self, name):
        return self.add("Cast", name, to=TensorProto.FLOAT)


def value_tag(attrs):
    """The string values among `attrs`, lowercase: they tell apart cases of one form."""
    return "-".join(v.lower() for _, v in sorted(attrs.items()) if isinstance(v, str))


def custom(op, attributes, opset=13, expect=AGREE, tag="", **fields):
    """A case built by the decorated function."""

    def register(build):
        return Case(op, tuple(sorted(attributes)), build, opset, expect, tag=tag, **fields)

    return register
