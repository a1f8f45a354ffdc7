"""clan_jax.perf.op_profile: kinds of XLA ops from a compiled module, self times, a real trace."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clan_jax.models import create_model
from clan_jax.perf import hlo_module, op_profile, op_scopes, step_benchmark
from clan_jax.train import optim, steps

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
  relu = next(row for row in summary['top_ops'] if row['op'] == 'loop_maximum_fusion')
  moved = 2 * 8 * 56 * 56 * 64 * 2  # Reads and writes one bf16 activation, 100 ns a step.
  assert (relu['bytes'], relu['gb_per_s']) == (moved, pytest.approx(moved / 100))
  assert summary['scopes'] == {'other': pytest.approx({'other': 4e-4}),  # No metadata here.
                               'unattributed': pytest.approx({'other': 2.5e-5})}


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


# A GPU module's shapes (cuDNN, cuBLAS, Triton) around one BasicBlock conv and its BatchNorm,
# bf16, batch 8 at 56 px, 64 -> 128 features; hand-written, so every count below is known.
_FWD = 'jit(train_step)/jvp(CLAN)/backbone'
_BWD = 'jit(train_step)/transpose(jvp(CLAN))/backbone'
GPU_TRAIN_HLO = f"""\
HloModule jit_train_step, entry_computation_layout={{(bf16[8,56,56,64]{{3,2,1,0}})->f32[]}}

%add (a: f32[], b: f32[]) -> f32[] {{
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%a, %b)
}}

%add_pair (c: f32[], d: f32[], e: f32[], f: f32[]) -> (f32[], f32[]) {{
  %c = f32[] parameter(0)
  %d = f32[] parameter(1)
  %e = f32[] parameter(2)
  %f = f32[] parameter(3)
  %add.2 = f32[] add(%c, %e)
  %add.3 = f32[] add(%d, %f)
  ROOT %tuple.2 = (f32[], f32[]) tuple(%add.2, %add.3)
}}

%bn_statistics (p.0: bf16[8,56,56,128]) -> (f32[128], f32[128]) {{
  %p.0 = bf16[8,56,56,128]{{3,2,1,0}} parameter(0)
  %convert.0 = f32[8,56,56,128]{{3,2,1,0}} convert(%p.0), metadata={{op_name="{_FWD}/layer1_0/bn1/convert_element_type"}}
  %zero.0 = f32[] constant(0)
  %reduce.0 = f32[128]{{0}} reduce(%convert.0, %zero.0), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="{_FWD}/layer1_0/bn1/reduce_sum"}}
  %multiply.0 = f32[8,56,56,128]{{3,2,1,0}} multiply(%convert.0, %convert.0), metadata={{op_name="{_FWD}/layer1_0/bn1/square"}}
  %reduce.1 = f32[128]{{0}} reduce(%multiply.0, %zero.0), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="{_FWD}/layer1_0/bn1/reduce_sum"}}
  ROOT %tuple.0 = (f32[128]{{0}}, f32[128]{{0}}) tuple(%reduce.0, %reduce.1)
}}

%bn_normalize (p.1: bf16[8,56,56,128]) -> f32[8,56,56,128] {{
  %p.1 = bf16[8,56,56,128]{{3,2,1,0}} parameter(0)
  ROOT %convert.1 = f32[8,56,56,128]{{3,2,1,0}} convert(%p.1), metadata={{op_name="{_FWD}/layer1_0/bn1/sub"}}
}}

%bn_backward_sums (p.2: bf16[8,56,56,128], p.3: f32[8,56,56,128]) -> (f32[128], f32[128], f32[8,56,56,128]) {{
  %p.2 = bf16[8,56,56,128]{{3,2,1,0}} parameter(0)
  %p.3 = f32[8,56,56,128]{{3,2,1,0}} parameter(1)
  %convert.2 = f32[8,56,56,128]{{3,2,1,0}} convert(%p.2), metadata={{op_name="{_BWD}/layer1_0/bn1/convert_element_type"}}
  %zero.2 = f32[] constant(0)
  %reduce.2 = (f32[128]{{0}}, f32[128]{{0}}) reduce(%convert.2, %p.3, %zero.2, %zero.2), dimensions={{0,1,2}}, to_apply=%add_pair, metadata={{op_name="{_BWD}/layer1_0/bn1/reduce_sum"}}
  %get-tuple-element.20 = f32[128]{{0}} get-tuple-element(%reduce.2), index=0
  %get-tuple-element.21 = f32[128]{{0}} get-tuple-element(%reduce.2), index=1
  ROOT %tuple.3 = (f32[128]{{0}}, f32[128]{{0}}, f32[8,56,56,128]{{3,2,1,0}}) tuple(%get-tuple-element.20, %get-tuple-element.21, %convert.2)
}}

%bn_backward_more (p.4: f32[8,56,56,128]) -> (f32[128], f32[128]) {{
  %p.4 = f32[8,56,56,128]{{3,2,1,0}} parameter(0)
  %zero.4 = f32[] constant(0)
  %reduce.4 = f32[128]{{0}} reduce(%p.4, %zero.4), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="{_BWD}/layer1_0/bn1/reduce_sum"}}
  %negate.4 = f32[8,56,56,128]{{3,2,1,0}} negate(%p.4), metadata={{op_name="{_BWD}/layer1_0/bn1/neg"}}
  %reduce.5 = f32[128]{{0}} reduce(%negate.4, %zero.4), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="{_BWD}/layer1_0/bn1/reduce_sum"}}
  ROOT %tuple.4 = (f32[128]{{0}}, f32[128]{{0}}) tuple(%reduce.4, %reduce.5)
}}

%bn_grad_to_nchw (p.5: f32[8,56,56,128]) -> bf16[8,56,56,128] {{
  %p.5 = f32[8,56,56,128]{{3,2,1,0}} parameter(0)
  %convert.5 = bf16[8,56,56,128]{{3,2,1,0}} convert(%p.5), metadata={{op_name="{_BWD}/layer1_0/bn1/mul"}}
  ROOT %copy.5 = bf16[8,56,56,128]{{1,0,2,3}} copy(%convert.5), metadata={{op_name="{_BWD}/layer1_0/bn1/mul"}}
}}

%downsample_gemm (p.6: bf16[8,56,56,64], p.7: bf16[64,256]) -> bf16[8,28,28,256] {{
  %p.6 = bf16[8,56,56,64]{{3,2,1,0}} parameter(0)
  %slice.6 = bf16[8,28,28,64]{{3,2,1,0}} slice(%p.6), slice={{[0:8], [0:56:2], [0:56:2], [0:64]}}
  %bitcast.6 = bf16[6272,64]{{1,0}} bitcast(%slice.6)
  %p.7 = bf16[64,256]{{1,0}} parameter(1)
  %dot.6 = bf16[6272,256]{{1,0}} dot(%bitcast.6, %p.7), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}
  ROOT %bitcast.7 = bf16[8,28,28,256]{{3,2,1,0}} bitcast(%dot.6)
}}

ENTRY %main.1 (image.1: bf16[8,112,112,3], x.1: bf16[8,56,56,64], w.1: bf16[128,3,3,64], stem.1: bf16[7,7,3,64], ds.1: bf16[64,256], fc.1: bf16[128,200], scale.1: f32[128]) -> f32[] {{
  %image.1 = bf16[8,112,112,3]{{3,2,1,0}} parameter(0), metadata={{op_name="batch[\\'image\\']"}}
  %x.1 = bf16[8,56,56,64]{{3,2,1,0}} parameter(1)
  %w.1 = bf16[128,3,3,64]{{3,2,1,0}} parameter(2), metadata={{op_name="state.params[\\'backbone\\'][\\'layer1_0\\'][\\'conv1\\'][\\'kernel\\']"}}
  %stem.1 = bf16[7,7,3,64]{{3,2,1,0}} parameter(3), metadata={{op_name="state.params[\\'backbone\\'][\\'conv1\\'][\\'kernel\\']"}}
  %ds.1 = bf16[64,256]{{1,0}} parameter(4)
  %fc.1 = bf16[128,200]{{1,0}} parameter(5)
  %scale.1 = f32[128]{{0}} parameter(6), metadata={{op_name="state.params[\\'backbone\\'][\\'layer1_0\\'][\\'bn1\\'][\\'scale\\']"}}
  %cudnn-conv.1 = (bf16[8,56,56,64]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%image.1, %stem.1), window={{size=7x7 stride=2x2 pad=3_3x3_3}}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward", metadata={{op_name="{_FWD}/conv1/conv_general_dilated"}}
  %cudnn-conv.2 = (bf16[8,56,56,128]{{3,2,1,0}}, u8[4096]{{0}}) custom-call(%x.1, %w.1), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={{op_name="{_FWD}/layer1_0/conv1/conv_general_dilated"}}
  %conv-out.2 = bf16[8,56,56,128]{{3,2,1,0}} get-tuple-element(%cudnn-conv.2), index=0
  %statistics.1 = (f32[128]{{0}}, f32[128]{{0}}) fusion(%conv-out.2), kind=kInput, calls=%bn_statistics, metadata={{op_name="{_FWD}/layer1_0/bn1/reduce_sum"}}
  %loop_convert_fusion.1 = f32[8,56,56,128]{{3,2,1,0}} fusion(%conv-out.2), kind=kLoop, calls=%bn_normalize
  %sums.1 = (f32[128]{{0}}, f32[128]{{0}}, f32[8,56,56,128]{{3,2,1,0}}) fusion(%conv-out.2, %loop_convert_fusion.1), kind=kInput, calls=%bn_backward_sums
  %grad.1 = f32[8,56,56,128]{{3,2,1,0}} get-tuple-element(%sums.1), index=2
  %sums.2 = (f32[128]{{0}}, f32[128]{{0}}) fusion(%grad.1), kind=kInput, calls=%bn_backward_more
  %copy_fusion.1 = bf16[8,56,56,128]{{1,0,2,3}} fusion(%grad.1), kind=kLoop, calls=%bn_grad_to_nchw
  %transpose.1 = bf16[8,128,56,56]{{3,2,1,0}} transpose(%conv-out.2), dimensions={{0,3,1,2}}, metadata={{op_name="{_BWD}/layer1_0/conv1/transpose"}}
  %copy.1 = f32[128]{{0}} copy(%scale.1)
  %cudnn-conv.3 = (bf16[8,56,56,64]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%copy_fusion.1, %w.1), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput", metadata={{op_name="{_BWD}/layer1_0/conv1/conv_general_dilated"}}
  %cudnn-conv.4 = (bf16[128,3,3,64]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%x.1, %copy_fusion.1), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %gemm_fusion.1 = bf16[8,28,28,256]{{3,2,1,0}} fusion(%x.1, %ds.1), kind=kCustom, calls=%downsample_gemm, metadata={{op_name="{_FWD}/layer2_0/downsample_conv/dot_general"}}, backend_config={{"fusion_backend_config":{{"kind":"__triton_gemm","triton_gemm_config":{{"block_m":"64"}}}}}}
  %cublas-gemm.1 = (bf16[8,200]{{1,0}}, s8[4194304]{{0}}) custom-call(%pooled.1, %fc.1), custom_call_target="__cublas$gemm", metadata={{op_name="jit(train_step)/jvp(CLAN)/CLAN._heads/fc/dot_general"}}
  %cublas-lt-matmul.1 = (bf16[128,200]{{1,0}}, s8[4194304]{{0}}) custom-call(%pooled.1, %logits-grad.1), custom_call_target="__cublas$lt$matmul", metadata={{op_name="jit(train_step)/transpose(jvp(CLAN))/CLAN._heads/fc/dot_general"}}
  ROOT %loss.1 = f32[] constant(0)
}}
"""


def test_the_audit_counts_a_gpu_style_module_exactly():
  report = op_profile.audit(GPU_TRAIN_HLO)
  assert report['convolution_kinds'] == {'forward': 2, 'backward-input': 1, 'backward-filter': 1}
  convolutions = {c['name']: c for c in report['convolutions']}
  assert [(c['kind'], c['implementation'], c['layout'], c['window'], c['features_in'],
           c['features_out']) for c in convolutions.values()] == [
      ('forward', 'cudnn', 'b01f_01io->b01f', '7x7/2x2', 3, 64),
      ('forward', 'cudnn', 'b01f_o01i->b01f', '3x3', 64, 128),
      ('backward-input', 'cudnn', 'b01f_o01i->b01f', '3x3', 64, 128),
      ('backward-filter', 'cudnn', 'b01f_o01i->b01f', '3x3', 64, 128)]
  # No metadata: the filter gradient takes its weight's scope.
  assert convolutions['cudnn-conv.4']['scope'] == 'layer1/conv'
  assert convolutions['cudnn-conv.4']['phase'] == 'backward'
  assert report['gemm_implementations'] == {'triton': 1, 'cublas': 1, 'cublasLt': 1}
  assert [g['name'] for g in report['gemms'] if g['slice_inside']] == ['gemm_fusion.1']
  activation = 8 * 56 * 56 * 128
  assert report['transposes'] == {'count': 2, 'bytes': 2 * 2 * activation,
                                  'fused_with_compute': 1}
  assert report['copies'] == {'count': 1, 'bytes': 4 * 128}
  f32 = report['f32_buffers']  # The smallest forward BN input sets the size.
  assert (f32['min_elements'], f32['count'], f32['bytes']) == (activation, 2, 2 * 4 * activation)
  assert f32['by_phase'] == {'forward': 1, 'backward': 1}
  assert report['batch_norm_reductions'] == {'layer1_0/bn1': {
      'forward': {'reductions': 2, 'kernels': 1}, 'backward': {'reductions': 4, 'kernels': 2}}}
  text = op_profile.format_audit(report, 'gpu-style')
  assert 'GEMMs: 1 triton, 1 cublas, 1 cublasLt (1 fusions with a slice inside)' in text
  assert 'fewer than 8 features: forward 7x7/2x2 3->64 x1' in text
  assert '1 x backward 4/2, forward 2/1  (layer1_0/bn1)' in text


def test_achieved_bandwidth_comes_from_the_shapes():
  module = hlo_module.parse(GPU_TRAIN_HLO)
  # Reads the bf16 convolution output, writes it in f32 (the workspace is not data).
  moved = 8 * 56 * 56 * 128 * (2 + 4)
  assert op_profile.bandwidth(module, 'loop_convert_fusion.1', 10_000) == {
      'bytes': moved, 'gb_per_s': moved / 10_000}
  assert hlo_module.result_bytes(module.instructions['cudnn-conv.2']) == 8 * 56 * 56 * 128 * 2
  flagged = op_profile.bandwidth(module, 'loop_convert_fusion.1', 10_000, peak_gbps=3350)
  assert flagged['peak_fraction'] == pytest.approx(moved / 10_000 / 3350)
  assert flagged['memory_bound']  # 58 % of the peak.
  assert not op_profile.bandwidth(module, 'loop_convert_fusion.1', 30_000, 3350)['memory_bound']
  assert op_profile.bandwidth(module, 'a_library_kernel', 10_000) == {}


@pytest.mark.parametrize('op_name, source, expected', [
    (f'{_FWD}/conv1/conv_general_dilated', '', ('stem/conv', 'forward')),
    (f'{_BWD}/bn1/mul', '', ('stem/bn', 'backward')),
    (f'{_FWD}/jit(relu)/max', '', ('stem/other', 'forward')),
    (f'{_FWD}/layer2_0/downsample_bn/rsqrt', '', ('layer2/bn', 'forward')),
    (f'{_BWD}/layer3_0/downsample_conv/pad', '', ('layer3/conv', 'backward')),
    (f'{_FWD}/layer4_1/jit(relu)/max', '', ('layer4/other', 'forward')),
    ('jit(train_step)/transpose(jvp(ResNetClassifier))/backbone/jvp(ResNetClassifier)/backbone/'
     'checkpoint/rematted_computation/layer1_0/bn1/sub', '', ('layer1/bn', 'recompute')),
    ('jit(train_step)/jvp(CLAN)/clca_layer2/clca_layer2._folded/bhqk,bhkc->bqc', '',
     ('clca', 'forward')),
    ('jit(train_step)/transpose(jvp(CLAN))/CLAN._spatial_attention/clsa_layer3/'
     'conv_general_dilated', '', ('clsa', 'backward')),
    ('jit(train_step)/jvp(CLAN)/CLAN._heads/heads_layer2/bn/div', '', ('heads', 'forward')),
    ('jit(train_step)/jvp(ResNetClassifier)/reduce_sum',
     '/r/clan_jax/models/resnet.py:global_average_pool', ('heads', 'forward')),
    ('jit(train_step)/transpose(jvp(jit(log_softmax)))/reduce_sum',
     '/r/clan_jax/models/loss.py:cross_entropy', ('loss', 'backward')),
    ('jit(train_step)/mul',
     '/v/site-packages/optax/_src/transform.py:scale_by_learning_rate.<locals>.<lambda>',
     ('optimizer', 'optimizer')),
    ('jit(train_step)/add', '/r/clan_jax/train/steps.py:train_step.<locals>.<lambda>',
     ('optimizer', 'optimizer')),
    ('jit(train_step)/reduce', '/r/clan_jax/train/steps.py:train_step', ('metrics', 'other')),
    ('jit(train_step)/sub', '/r/clan_jax/datasets/preprocess.py:normalize', ('input', 'other')),
    ('jit(<lambda>)/CLAN/backbone/layer1_0/conv2/conv_general_dilated', '',  # An eval step.
     ('layer1/conv', 'forward')),
])
def test_op_names_map_to_scopes_and_passes(op_name, source, expected):
  scope = op_scopes.scope_of(op_name, source)
  assert (scope, op_scopes.phase_of(op_name, scope)) == expected


def test_the_frame_tables_give_each_op_its_source():
  text = ('HloModule m\n\nFileNames\n1 "/r/clan_jax/models/loss.py"\n\nFunctionNames\n'
          '1 "cross_entropy"\n\nFileLocations\n1 {file_name_id=1 function_name_id=1 line=3}\n\n'
          'StackFrames\n1 {file_location_id=1 parent_frame_id=1}\n\n'
          'ENTRY %main (p: f32[2]) -> f32[2] {\n  %p = f32[2]{0} parameter(0)\n'
          '  ROOT %neg.1 = f32[2]{0} negate(%p), metadata={op_name="jit(f)/neg" '
          'stack_frame_id=1}\n}\n')
  negate = hlo_module.parse(text).instructions['neg.1']
  assert negate.source == '/r/clan_jax/models/loss.py:cross_entropy'
  assert op_scopes.instruction_scopes(hlo_module.parse(text)) == {'neg.1': ('loss', 'forward')}


@pytest.fixture(scope='module')
def resnet18_train_step():
  """ResNet-18's train step at 32 px, batch 2, compiled for the CPU with LLVM at -O0 (the same
  HLO, compiled 3x faster); its state made from shapes, without an initialising compile."""
  model = create_model(step_benchmark.model_config(
      {'model': 'resnet', 'depth': 18, 'dtype': 'float32'}), 10)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  tx, schedules = optim.create_optimizer(
      types.SimpleNamespace(**step_benchmark.OPTIMIZER), variables['params'], num_classes=10,
      batch_size=2, total_steps=10, warmup_steps=0)
  state = steps.create_train_state(variables['params'], variables['batch_stats'], tx)
  batch = {'image': np.zeros((2, 32, 32, 3), np.uint8), 'label': np.array([1, 2], np.int32)}
  train_step = jax.jit(functools.partial(steps.train_step, model, tx, schedules,
                                         step_benchmark.MODEL_DEFAULTS['head_loss_weights'], 0.0))
  compiled = train_step.lower(state, batch).compile({'xla_backend_optimization_level': 0})
  return (lambda: jax.block_until_ready(compiled(state, batch))), compiled.as_text()


def test_a_real_step_is_timed_by_scope_and_audited(resnet18_train_step):
  step, hlo_text = resnet18_train_step
  step()
  summary = op_profile.profile(step, hlo_text, steps=1, top=5)
  scopes = summary['scopes']
  # A block's residual add and ReLU belong to its last BatchNorm (BatchNorm(relu=True));
  # the stem's max pool is its 'other'.
  parts = [f'{stage}/{part}' for stage in ('stem', 'layer1', 'layer2', 'layer3', 'layer4')
           for part in ('conv', 'bn')]
  assert set(parts + ['stem/other', 'heads', 'loss', 'optimizer']) <= set(scopes)
  for scope in parts:
    assert {'forward', 'backward'} <= set(scopes[scope]), scope
  assert set(scopes['optimizer']) == {'optimizer'}
  assert sum(ms for row in scopes.values() for ms in row.values()) == pytest.approx(
      summary['op_ms_per_step'])
  report = summary['audit']  # 17 convolutions (1x1 downsamples are GEMMs), the stem's input
  assert report['convolution_kinds'] == {  # has no gradient.
      'forward': 17, 'backward-input': 16, 'backward-filter': 17}
  assert len(report['batch_norm_reductions']) == 20
  for passes in report['batch_norm_reductions'].values():
    assert set(passes) == {'forward', 'backward'}
  text = op_profile.format_profile(summary, 'resnet18')
  assert 'by scope (ms per step)' in text and 'backbone BatchNorm' in text
  assert text.index('top ops of') < text.index('Audit of the compiled module')
