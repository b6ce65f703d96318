"""Where a training step's time goes: TensorFlow's profiler, summed by op type and by network.

`profile(fn, steps)` traces `steps` calls of `fn` with `tf.profiler.experimental` and reads the trace
(the XPlane protobuf TensorFlow writes) without TensorBoard's profile plugin: every kernel event on
TensorFlow's compute threads is named `<op name>:<op type>`; its duration is summed by type and by
the network its name belongs to (the first name scope, with a gradient's `gradient_tape/` prefix
read as that network's backward pass). With oneDNN on (TensorFlow's default on Intel CPUs) kernels
carry oneDNN's names (`_MklNativeConv2D`, `_MklNativeFusedConv2D`, `_MklMatMul`); `op_type_of` files
them, and the graph optimiser's fused kernels (`_FusedConv2D`), under the op type they compute. Kernels on parallel threads overlap, so the figures are
kernel time, not wall time; shares are of the total kernel time.
"""
import collections
import glob
import os
import re
import tempfile


def profile(fn, steps=1):
    """Traces `steps` calls of `fn` (already traced and warm) and sums their kernel time.

    Returns:
        `(by_type, by_network)`: `{name: picoseconds over all steps}` each; "network" is the first
        name scope of the op, a network where the code calls one through Keras, else a layer.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                out = fn()
            for value in tf.nest.flatten(out):
                value.numpy()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"the profiler wrote no trace under {logdir}")
        with open(paths[0], "rb") as f:
            return kernel_times(f.read())


def kernel_times(xspace_bytes):
    """`(by_type, by_network)` picoseconds summed over the kernel events of a serialised XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel
    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes)
    by_type, by_network = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                op_name, sep, op_type = name.rpartition(":")
                if not sep or not op_name or "::" in name:
                    continue  # the executor's own bookkeeping (ExecutorState::Process), not a kernel
                by_type[op_type_of(op_type)] += event.duration_ps
                by_network[network_of(op_name)] += event.duration_ps
    return by_type, by_network


#: oneDNN's kernel prefix: `_MklConv2D`, `_MklNativeConv2D` (its "native format" build, TF >= 2.5).
_ONEDNN_PREFIX = re.compile(r"^_Mkl(Native)?")
#: A convolution or matmul fused with its bias, activation or padding by the graph optimiser
#: (`_FusedConv2D`, `FusedMatMul`, `PadWithFusedConv2D`) still spends its time in that op.
_FUSION_PREFIX = re.compile(r"^_?(?:PadWith|Fused)+(?=(?:Conv|MatMul|BatchMatMul|DepthwiseConv))")


def op_type_of(kernel_type):
    """The op type a kernel computes: `_MklNativeFusedConv2D` -> `Conv2D`, `_MklMatMul` -> `MatMul`,
    `_MklNativeConv2DBackpropFilter` -> `Conv2DBackpropFilter`; other names are returned as they are
    (`FusedBatchNormV3` is an op type of its own)."""
    op_type = _FUSION_PREFIX.sub("", _ONEDNN_PREFIX.sub("", kernel_type))
    return re.sub(r"(?<=Conv2D)WithBias$", "", op_type)


#: Name scopes every op of a step may sit in, which say nothing of the network.
_WRAPPERS = re.compile(r"^(StatefulPartitionedCall|PartitionedCall|__inference|replica|while|cond)")


def network_of(op_name):
    """The network an op belongs to, from its name:
    `StatefulPartitionedCall/discriminator_1/trunk/conv/Conv2D` -> `discriminator`,
    `.../gradient_tape/generator_1_1/...` -> `generator (backward)`, a gradient penalty's
    `gradient_tape/gradient_tape/discriminator/...` -> `discriminator (double backward)`, an
    optimizer's update -> `optimizer updates`. Keras numbers a scope again on each call (`_1`,
    `_2`), and the numbers of the n region generators look alike, so trailing numbers are dropped."""
    parts = [p for p in op_name.split("/") if p]
    while len(parts) > 1 and _WRAPPERS.match(parts[0]):
        parts = parts[1:]
    order = 0  # a gradient of a gradient (a gradient penalty) is named gradient_tape/gradient_tape/...
    while len(parts) > 1 and re.fullmatch(r"gradient_tape(_\d+)?", parts[0]):
        order, parts = order + 1, parts[1:]
    if len(parts) < 2:
        return "(outside any network)"
    name = re.sub(r"(_\d+)+$", "", parts[0])
    if "adam" in name.lower() or name.startswith("update"):
        return "optimizer updates"
    return name + {0: "", 1: " (backward)"}.get(order, " (double backward)")


def format_table(counter, title, steps, top=12):
    """`counter` as rows of milliseconds per step and share of the total, the largest first."""
    total = sum(counter.values()) or 1
    lines = [f"{title:<44}{'ms/step':>10}{'share':>8}"]
    rows = counter.most_common()
    for name, ps in rows[:top]:
        lines.append(f"{name[:43]:<44}{ps / 1e9 / steps:>10.1f}{100.0 * ps / total:>7.1f}%")
    rest = sum(ps for _, ps in rows[top:])
    if rest:
        lines.append(f"{f'({len(rows) - top} others)':<44}{rest / 1e9 / steps:>10.1f}{100.0 * rest / total:>7.1f}%")
    return "\n".join(lines)
