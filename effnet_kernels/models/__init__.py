"""Models: the eager EfficientNet of any φ (``efficientnet``) and the converters that load torchvision's and
timm's weights into it (``from_torchvision``, ``from_timm``)."""
from .convert import from_timm, from_torchvision
from .efficientnet import ConvBNAct, EfficientNet, MBConv, SqueezeExcite, efficientnet, stochastic_depth

__all__ = ["ConvBNAct", "SqueezeExcite", "MBConv", "EfficientNet", "efficientnet", "stochastic_depth",
           "from_torchvision", "from_timm"]
