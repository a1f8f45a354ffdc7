"""clan_jax.perf.op_profile: kinds of XLA ops from a compiled module, self times, a real trace."""

import types

import jax
import jax.numpy as jnp
import pytest

from clan_jax.perf import op_profile

# The shapes of a GPU module's text (jax 0.11): a cuDNN convolution, a Triton GEMM fusion,
# cuBLAS, cuDNN's fused attention, a loop fusion, a reduction, a transpose, a collective.
GPU_STYLE_HLO = """\
HloModule jit_step, entry_computation_layout={(bf16[8,56,56,64]{3,2,1,0})->f32[64]{0}}

%fused_relu (param_0: bf16[8,56,56,64]) -> bf16[8,56,56,64] {
  %param_0 = bf16[8,56,56,64]{3,2,1,0} parameter(0)
  %constant_1 = bf16[] constant(0)
  %broadcast.1 = bf16[8,56,56,64]{3,2,1,0} broadcast(%constant_1), dimensions={}
  ROOT %maximum.1 = bf16[8,56,56,64]{3,2,1,0} maximum(%param_0, %broadcast.1)
}

%triton_gemm (p0: bf16[64,256], p1: bf16[256,128]) -> bf16[64,128] {
  %p0 = bf16[64,256]{1,0} parameter(0)
  %p1 = bf16[256,128]{1,0} parameter(1)
  ROOT %dot.3 = bf16[64,128]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%a, %b)
}

%fused_reduce (param_0.1: f32[8,64]) -> f32[64] {
  %param_0.1 = f32[8,64]{1,0} parameter(0)
  %constant_2 = f32[] constant(0)
  ROOT %reduce.4 = f32[64]{0} reduce(%param_0.1, %constant_2), dimensions={0}, to_apply=%add
}

%fused_transpose (param_0.2: f32[8,64]) -> f32[64,8] {
  %param_0.2 = f32[8,64]{1,0} parameter(0)
  %bitcast.3 = f32[8,64]{1,0} bitcast(%param_0.2)
  ROOT %transpose.5 = f32[64,8]{1,0} transpose(%bitcast.3), dimensions={1,0}
}

ENTRY %main.10 (Arg_0.1: bf16[8,56,56,64]) -> f32[64] {
  %Arg_0.1 = bf16[8,56,56,64]{3,2,1,0} parameter(0)
  %custom-call.1 = (bf16[8,56,56,64]{3,2,1,0}, u8[0]{0}) custom-call(%Arg_0.1, %Arg_0.1), custom_call_target="__cudnn$convForward", backend_config={"x":1}
  %get-tuple-element.1 = bf16[8,56,56,64]{3,2,1,0} get-tuple-element(%custom-call.1), index=0
  %loop_maximum_fusion = bf16[8,56,56,64]{3,2,1,0} fusion(%get-tuple-element.1), kind=kLoop, calls=%fused_relu
  %gemm_fusion_dot.3 = bf16[64,128]{1,0} fusion(%a, %b), kind=kCustom, calls=%triton_gemm, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}
  %input_reduce_fusion = f32[64]{0} fusion(%x), kind=kInput, calls=%fused_reduce
  %transpose_fusion = f32[64,8]{1,0} fusion(%x), kind=kLoop, calls=%fused_transpose
  %custom-call.2 = (bf16[8,4,3136,64]{3,2,1,0}, u8[0]{0}) custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax"
  %cublas-gemm.1 = (f32[64,128]{1,0}, s8[4194304]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm"
  %all-reduce-start = f32[64]{0} all-reduce-start(%r), replica_groups={}, to_apply=%add
  %copy.7 = f32[8,64]{0,1} copy(%x)
  ROOT %tuple.1 = (f32[64]{0}) tuple(%input_reduce_fusion)
}
"""


def test_kinds_of_a_gpu_style_module():
  kinds = op_profile.hlo_op_categories(GPU_STYLE_HLO)
  assert {name: kinds[name] for name in (
      'custom-call.1', 'loop_maximum_fusion', 'gemm_fusion_dot.3', 'input_reduce_fusion',
      'transpose_fusion', 'custom-call.2', 'cublas-gemm.1', 'all-reduce-start', 'copy.7')} == {
          'custom-call.1': 'convolution', 'loop_maximum_fusion': 'elementwise',
          'gemm_fusion_dot.3': 'matmul', 'input_reduce_fusion': 'reduction',
          'transpose_fusion': 'data movement', 'custom-call.2': 'attention',
          'cublas-gemm.1': 'matmul', 'all-reduce-start': 'collective', 'copy.7': 'data movement'}
  assert set(kinds.values()) <= set(op_profile.CATEGORIES)


def test_library_kernels_without_an_hlo_name_are_sorted_by_name():
  assert [op_profile.kernel_name_category(name) for name in (
      'sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc',
      'sm90_xmma_wgrad_implicit_gemm_bf16', 'nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN',
      'cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16', 'ncclDevKernel_AllReduce',
      'Memcpy DtoD (Device -> Device)', 'some_custom_kernel')] == [
          'convolution', 'convolution', 'matmul', 'attention', 'collective', 'data movement',
          'other']


def test_self_times_subtract_nested_events():
  events = [(0, 10, 'a'), (2, 3, 'b'), (6, 2, 'c'), (12, 4, 'd'), (13, 1, 'e')]
  assert op_profile.self_times(events) == {0: 5, 1: 3, 2: 2, 3: 3, 4: 1}
  deep = [(1, 8, 'inner'), (0, 10, 'outer'), (2, 2, 'innermost')]  # Any order.
  assert op_profile.self_times(deep) == {1: 2, 0: 6, 2: 2}


def _event(name, start, duration, **stats):
  return types.SimpleNamespace(name=name, start_ns=start, duration_ns=duration,
                               stats=list(stats.items()))


def test_a_gpu_trace_is_read_from_kernel_annotations_and_names():
  """A device plane as XLA:GPU and CUPTI write it: kernels carry an annotation
  'XlaModule:#...#::Thunk:#name=...,hlo_op=NAME#', else only their kernel name."""
  stream = types.SimpleNamespace(name='Stream #13(Compute)', events=[
      _event('sm90_xmma_fprop_implicit_gemm_bf16', 0, 400, annotation=(
          'XlaModule:#hlo_module=jit_step,program_id=3#::Thunk:#name=conv,hlo_op=custom-call.1#')),
      _event('loop_maximum_fusion', 400, 100),  # No annotation: the kernel is the fusion.
      _event('gemm_fusion_dot_3', 500, 200),  # LLVM's spelling of gemm_fusion_dot.3.
      _event('nvjet_hsh_128x256_64x4', 700, 50),  # A library kernel, no HLO name.
      _event('loop_maximum_fusion', 900, 100)])
  host = types.SimpleNamespace(name='/host:CPU', lines=[types.SimpleNamespace(
      name='python', events=[_event('PjitFunction(step)', 0, 5000, hlo_op='ignored')])])
  planes = iter([host, types.SimpleNamespace(name='/device:GPU:0', lines=[stream])])
  times = op_profile.op_times_of_planes(planes, GPU_STYLE_HLO)
  assert times['planes'] == ['/device:GPU:0'] and times['busy_ns'] == 850  # A 150 ns gap.
  assert times['per_op'] == {'custom-call.1': [400, 1], 'loop_maximum_fusion': [200, 2],
                             'gemm_fusion_dot.3': [200, 1], 'nvjet_hsh_128x256_64x4': [50, 1]}
  summary = op_profile.summarize(times, GPU_STYLE_HLO, steps=2, step_time_s=1e-6, top=10)
  assert summary['categories'] == pytest.approx(
      {'convolution': 2e-4, 'matmul': 1.25e-4, 'elementwise': 1e-4})  # ms per step.


@pytest.fixture(scope='module')
def conv_dot_step():
  """A jitted convolution, relu and matrix product, compiled, and a step that blocks."""

  def net(x, kernel, weight):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.dot(jax.nn.relu(y).reshape(x.shape[0], -1), weight)

  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  args = (jax.random.normal(keys[0], (4, 32, 32, 16)), jax.random.normal(keys[1], (3, 3, 16, 16)),
          jax.random.normal(keys[2], (32 * 32 * 16, 64)))
  compiled = jax.jit(net).lower(*args).compile()
  return (lambda: jax.block_until_ready(compiled(*args))), compiled.as_text()


def test_a_real_trace_is_summed_per_op_and_kind(conv_dot_step, tmp_path):
  step, hlo_text = conv_dot_step
  step()
  summary = op_profile.profile(step, hlo_text, steps=2, logdir=str(tmp_path), top=50)
  assert summary['steps'] == 2 and summary['planes']
  assert summary['categories']['convolution'] > 0 and summary['categories']['matmul'] > 0
  kinds = op_profile.hlo_op_categories(hlo_text)
  for row in summary['top_ops']:
    assert kinds[row['op']] == row['category']  # Every timed op is one of the module's.
    assert row['calls_per_step'] >= 1
  assert sum(summary['categories'].values()) == pytest.approx(summary['op_ms_per_step'])
  assert sum(f['ms_per_step'] for f in summary['top_families']) == pytest.approx(
      summary['op_ms_per_step'])  # Fewer families than 50 here: every op is in one.
  assert 0 < summary['busy_ms_per_step'] <= summary['op_ms_per_step'] + 1e-9
  assert summary['trace'].startswith(str(tmp_path)) and summary['trace'].endswith('.xplane.pb')
  text = op_profile.format_profile(summary, 'conv-dot')
  assert 'conv-dot' in text and 'convolution' in text and 'matmul' in text
  assert 'top families' in text


def test_families_drop_the_numeric_suffix():
  rows = [{'op': 'copy_bitcast_fusion.43', 'category': 'elementwise', 'ms_per_step': 2.0},
          {'op': 'copy_bitcast_fusion.44', 'category': 'elementwise', 'ms_per_step': 1.0},
          {'op': 'loop_add_fusion_3', 'category': 'elementwise', 'ms_per_step': 0.5},
          {'op': 'convolution', 'category': 'convolution', 'ms_per_step': 4.0}]
  assert [(f['family'], f['ops'], f['ms_per_step']) for f in op_profile.op_families(rows)] == [
      ('convolution', 1, 4.0), ('copy_bitcast_fusion', 2, 3.0), ('loop_add_fusion', 1, 0.5)]
