"""Public fused ops. Each is one ``torch.library`` op (``effnet_kernels::<name>``) with a fixed schema and
a fake implementation, so ``torch.compile(fullgraph=True)`` and ``torch.export`` can trace models that
use them; ``backend=`` lives only in these Python wrappers.

* :func:`dwconv_bias_swish` — ``silu(depthwise_conv2d(x, weight) + bias)`` (``act=``: ReLU, ReLU6, Hardswish or
  none instead, for EfficientNet's cousins): the primitive fused blocks
  call with BatchNorm folded into ``weight``/``bias`` once (see :func:`effnet_kernels.reference.fold_bn`);
* :func:`dwconv_bias_swish_pool` — the same plus ``pooled``, the fp32 (N, C) mean of y over H×W computed in
  the same pass (the squeeze-excitation input);
* :func:`dwconv_bn_swish` — the convenience form with an unfolded eval-mode BatchNorm;
* :func:`squeeze_excite` — the stand-alone squeeze-excitation ``x * sigmoid(expand(silu(reduce(mean(x)))))``
  (torchvision's ``SqueezeExcitation(activation=SiLU)``, timm's ``SqueezeExcite``; ``inner_act=`` / ``gate=``
  for MobileNetV3's ReLU inside and hardsigmoid gate);
* :func:`se_gate` — the SE gate from the pooled means the depthwise op emits;
* :func:`se_project` — what an MBConv block runs after its depthwise conv: the SE gate folded into the
  projection 1×1 conv (BN folded), plus the residual, without another pass over y for the pool or the scale.

Backends: ``None`` (the registered op, which picks the kernel by device — in eager mode on CPU the C++
kernel is called directly, skipping ~8 µs of dispatcher overhead; under ``torch.compile`` the op is
called), ``"cpp"`` (C++ SIMD kernels, fp32 CPU), ``"triton"`` (GPU kernels; on CPU tensors only under
``TRITON_INTERPRET=1``), ``"torch"`` (the eager reference). Output memory format: channels_last when x
is channels_last (and not also NCHW-contiguous), NCHW otherwise.

Layout: ``_dispatch`` (backends, the dtype rule, the refusals, the one dispatch function), ``_validate`` (the
argument checks every backend runs), ``dwconv`` and ``se`` (each op family's registered ops, fakes, CUDA
registration and wrappers).
"""
from ..cpu import clear_caches
from ._dispatch import BACKENDS, available_backends, dtypes_for
from .dwconv import dwconv_bias_swish, dwconv_bias_swish_pool, dwconv_bn_swish
from .se import se_gate, se_project, squeeze_excite

__all__ = ["BACKENDS", "available_backends", "dtypes_for", "dwconv_bias_swish", "dwconv_bias_swish_pool",
           "dwconv_bn_swish", "squeeze_excite", "se_gate", "se_project", "clear_caches"]
