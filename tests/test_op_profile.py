"""tools/op_profile.py: a profiler trace summed by op type and by network, read without TensorBoard."""
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import op_profile  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("op_name,network", [
    ("StatefulPartitionedCall_1/gradient_tape/discriminator_3/discriminator_trunk_1/conv/Conv2DBackpropFilter",
     "discriminator (backward)"),
    ("StatefulPartitionedCall/generator_1_1/up_res_block_5_1/conv/Conv2D", "generator"),
    ("StatefulPartitionedCall/gradient_tape/gradient_tape_1/discriminator_2/block/conv/Conv2D",
     "discriminator (double backward)"),
    ("StatefulPartitionedCall/mask_network_1/conv2d_9_1/convolution", "mask_network"),
    ("StatefulPartitionedCall/fused_adam_1/ResourceApplyAdam", "optimizer updates"),
    ("StatefulPartitionedCall/mul_4", "(outside any network)"),
    ("Sum", "(outside any network)"),
])
def test_an_op_is_charged_to_the_network_its_name_scope_names(op_name, network):
    assert op_profile.network_of(op_name) == network


def _space(events):
    """A serialised XSpace with one plane: `events` `{line name: [(event name, picoseconds)]}`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    ids = {}
    for line_name, line_events in events.items():
        line = plane.lines.add(name=line_name)
        for name, ps in line_events:
            if name not in ids:
                ids[name] = len(ids) + 1
                plane.event_metadata[ids[name]].name = name
                plane.event_metadata[ids[name]].id = ids[name]
            line.events.add(metadata_id=ids[name], duration_ps=ps)
    return space.SerializeToString()


def test_kernel_events_of_the_compute_threads_are_summed_and_bookkeeping_is_left_out():
    trace = _space({
        "python": [("f", 10_000), ("EagerExecute", 9_000)],
        "tf_Compute/1": [("ExecutorState::Process", 7_000),
                         ("StatefulPartitionedCall/gradient_tape/discriminator_1/conv/Conv2DBackpropInput:"
                          "Conv2DBackpropInput", 300),
                         ("StatefulPartitionedCall/discriminator_1/conv/Conv2D:Conv2D", 100)],
        "tf_Compute/2": [("StatefulPartitionedCall/generator_0/conv/Conv2D:Conv2D", 50),
                         ("ParallelFor", 40)],
        "tf_numa_-1_Eigen/3": [("StatefulPartitionedCall/generator_0/conv/Conv2D:Conv2D", 999)],
    })
    by_type, by_network = op_profile.kernel_times(trace)
    assert dict(by_type) == {"Conv2DBackpropInput": 300, "Conv2D": 150}
    assert dict(by_network) == {"discriminator (backward)": 300, "discriminator": 100, "generator": 50}


@pytest.mark.parametrize("kernel_type,op_type", [
    ("_MklNativeConv2D", "Conv2D"),          # oneDNN on (TensorFlow's default on Intel CPUs)
    ("_MklConv2D", "Conv2D"),
    ("_MklNativeFusedConv2D", "Conv2D"),
    ("_MklNativePadWithFusedConv2D", "Conv2D"),
    ("_MklNativeConv2DWithBias", "Conv2D"),
    ("_FusedConv2D", "Conv2D"),              # the graph optimiser's fusion, oneDNN off
    ("_MklNativeConv2DBackpropFilter", "Conv2DBackpropFilter"),
    ("_MklNativeConv2DBackpropInput", "Conv2DBackpropInput"),
    ("_MklMatMul", "MatMul"),
    ("_MklNativeFusedMatMul", "MatMul"),
    ("_MklFusedDepthwiseConv2dNative", "DepthwiseConv2dNative"),
    ("_MklNativeFusedBatchNormV3", "FusedBatchNormV3"),
    ("FusedBatchNormV3", "FusedBatchNormV3"),
    ("Conv2D", "Conv2D"),
    ("Sum", "Sum"),
])
def test_onednn_and_fused_kernel_names_are_filed_under_the_op_type_they_compute(kernel_type, op_type):
    assert op_profile.op_type_of(kernel_type) == op_type


def test_a_trace_with_onednn_kernel_names_sums_them_with_the_plain_kernels():
    # What the Intel Xeon session's profile held: oneDNN kernels beside Eigen's.
    trace = _space({"tf_Compute/1": [
        ("StatefulPartitionedCall/discriminator_1/conv/Conv2D:_MklNativeConv2D", 400),
        ("StatefulPartitionedCall/generator_0/conv/Conv2D:_MklNativeFusedConv2D", 100),
        ("StatefulPartitionedCall/generator_0/conv/Conv2D:Conv2D", 50),
        ("StatefulPartitionedCall/generator_0/dense/MatMul:_MklMatMul", 20),
        ("StatefulPartitionedCall/Sum:Sum", 10)]})
    by_type, by_network = op_profile.kernel_times(trace)
    assert dict(by_type) == {"Conv2D": 550, "MatMul": 20, "Sum": 10}
    assert by_network["generator"] == 170 and by_network["discriminator"] == 400


def test_the_table_shows_milliseconds_per_step_and_shares_largest_first_with_the_rest_in_one_row():
    import collections
    counter = collections.Counter({"Conv2D": 6e9, "MatMul": 3e9, "Add": 0.5e9, "Mul": 0.5e9})
    table = op_profile.format_table(counter, "op type", steps=2, top=2)
    lines = table.splitlines()
    assert re.match(r"^op type\s+ms/step\s+share$", lines[0])
    assert re.match(r"^Conv2D\s+3\.0\s+60\.0%$", lines[1]), table
    assert re.match(r"^MatMul\s+1\.5\s+30\.0%$", lines[2]), table
    assert re.match(r"^\(2 others\)\s+0\.5\s+10\.0%$", lines[3]), table
    assert len(lines) == 4


def test_a_traced_function_is_profiled_by_its_op_types():
    import tensorflow as tf

    @tf.function
    def step(x, k):
        return tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME"))

    x, k = tf.random.normal([2, 32, 32, 8]), tf.random.normal([3, 3, 8, 8])
    step(x, k)
    by_type, _ = op_profile.profile(lambda: step(x, k), steps=2)
    assert by_type["Conv2D"] > 0 and by_type.most_common(1)[0][0] == "Conv2D", by_type
