"""alexnet_tf's net in PyTorch: the peer that `torch_peer.py` times.

The same layers as `alexnet_tf.model.build_model` (Sec. 3.5, Fig. 2): two columns that
talk only at conv3 and the fc layers (conv2, conv4, conv5 as grouped convolutions,
groups=2), ReLU, local response normalization after conv1 and conv2, overlapping max
pooling 3/2, dropout 0.5 on the outputs of fc6 and fc7 (Sec. 4.2), the same widths at
any `width`. Flattening is channels-first here and channels-last in Keras: the fc6
weights differ by that permutation only (`load_keras_weights` applies it).

    python -m benchmarks.torch_net          # prints the parameter count of both nets
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Sec. 3.5 / Fig. 2: (filters, kernel, stride, padding, groups)
CONV_SPECS = {
    "conv1": (96, 11, 4, 0, 1),
    "conv2": (256, 5, 1, 2, 2),
    "conv3": (384, 3, 1, 1, 1),  # sees both columns
    "conv4": (384, 3, 1, 1, 2),
    "conv5": (256, 3, 1, 1, 2),
}
FC_UNITS = {"fc6": 4096, "fc7": 4096}
# The nets `bench train` runs from the shipped recipes: input size, width, classes.
GEOMETRY = {"paper": (227, 1.0, 1000), "quickstart": (67, 0.25, 10)}
# Sec. 3.3 as alexnet_tf.model.LocalResponseNormalization reads it: (k, alpha divided by n)
LRN_CONVENTIONS = {"paper": (2.0, False), "cuda-convnet": (2.0, True), "caffe": (1.0, True)}


def lrn(convention: str = "paper", size: int = 5, alpha: float = 1e-4, beta: float = 0.75) -> nn.LocalResponseNorm:
    """torch's LRN computes b = a / (k + alpha_t / n * sum a^2) ** beta; Sec. 3.3 has no 1/n
    (k=2, alpha=1e-4), so the paper's convention passes alpha_t = n * alpha."""
    k, per_term = LRN_CONVENTIONS[convention]
    return nn.LocalResponseNorm(size, alpha=alpha if per_term else alpha * size, beta=beta, k=k)


class PaperDropout(nn.Module):
    """Dropout in Sec. 4.2's form ("paper"): training zeroes each unit with probability
    p and leaves the rest unscaled; at test every unit is multiplied by 1 - p. "inverted"
    is torch's (and Keras') nn.Dropout: kept units scaled by 1 / (1 - p) in training."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * (1.0 - self.p)


def widths(width: float) -> dict:
    """Filters and units per layer, rounded as alexnet_tf.model._widths does (two columns)."""
    out = {name: max(2, 2 * round(spec[0] * width / 2)) for name, spec in CONV_SPECS.items()}
    out.update({name: max(2, round(units * width)) for name, units in FC_UNITS.items()})
    return out


class AlexNet(nn.Module):
    """The two-column AlexNet of Sec. 3 at `input_size` px and `width`."""

    def __init__(
        self,
        input_size: int = 227,
        width: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.5,
        dropout_form: str = "paper",
        lrn_convention: str = "paper",
    ):
        super().__init__()
        w = widths(width)
        layers, cin, size = [], 3, input_size
        for name, (_, kernel, stride, padding, groups) in CONV_SPECS.items():
            conv = nn.Conv2d(cin, w[name], kernel, stride, padding, groups=groups)
            layers += [conv, nn.ReLU(inplace=True)]
            size = (size + 2 * padding - kernel) // stride + 1
            if name in ("conv1", "conv2"):
                layers.append(lrn(lrn_convention))  # Sec. 3.3
            if name in ("conv1", "conv2", "conv5"):
                layers.append(nn.MaxPool2d(3, 2))  # Sec. 3.4: overlapping, z=3, s=2
                size = (size - 3) // 2 + 1
            cin = w[name]
        self.features = nn.Sequential(*layers)
        drop = (lambda: PaperDropout(dropout)) if dropout_form == "paper" else (lambda: nn.Dropout(dropout))
        self.classifier = nn.Sequential(
            nn.Linear(cin * size * size, w["fc6"]),
            nn.ReLU(inplace=True),
            drop(),  # Sec. 4.2: the outputs of fc6
            nn.Linear(w["fc6"], w["fc7"]),
            nn.ReLU(inplace=True),
            drop(),  # and of fc7
            nn.Linear(w["fc7"], num_classes),
        )
        self.flat_shape = (cin, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, classes)
        return self.classifier(torch.flatten(self.features(x), 1))


def build(model: str, dropout_form: str = "paper") -> AlexNet:
    """The peer of `recipes/paper.py` ("paper") or `recipes/quickstart.py` ("quickstart")."""
    size, width, classes = GEOMETRY[model]
    return AlexNet(size, width, classes, dropout_form=dropout_form)


def forward_macs(net: AlexNet, input_size: int) -> int:
    """Multiply-adds of one image's forward pass in the convolutions and fc layers, counted
    as alexnet_tf.bench.forward_macs counts them (724 M for the paper's net)."""
    total, x = 0, torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        for layer in net.features:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                total += x.shape[2] * x.shape[3] * layer.weight.numel()
    return total + sum(m.weight.numel() for m in net.classifier if isinstance(m, nn.Linear))


def load_keras_weights(net: AlexNet, keras_model) -> AlexNet:
    """Copies a Keras alexnet_tf model's weights into `net` (HWIO -> OIHW kernels; fc6's
    rows from channels-last to channels-first order)."""
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for name, conv in zip(CONV_SPECS, convs):
            layer = keras_model.get_layer(name)
            conv.weight.copy_(torch.from_numpy(layer.kernel.numpy()).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))
        c, h, w = net.flat_shape
        for name, fc in zip(("fc6", "fc7", "fc8"), fcs):
            layer = keras_model.get_layer(name)
            kernel = torch.from_numpy(layer.kernel.numpy())  # (in, out)
            if name == "fc6":  # Keras flattens (h, w, c), torch (c, h, w)
                kernel = kernel.reshape(h, w, c, -1).permute(2, 0, 1, 3).reshape(c * h * w, -1)
            fc.weight.copy_(kernel.T)
            fc.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    return net


def param_groups(net: nn.Module, weight_decay: float) -> list:
    """Sec. 5's decay on the weights, none on the biases (alexnet_tf's optim.decay_biases=False)."""
    decayed = [p for p in net.parameters() if p.dim() > 1]
    plain = [p for p in net.parameters() if p.dim() <= 1]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def recipe_init(net: nn.Module, model: str) -> None:
    """The recipe's init: "paper", Sec. 5's weights N(0, 0.01) and biases 1 in conv2, conv4,
    conv5, fc6, fc7 (else 0); "quickstart", N(0, 2 / fan-in) weights and biases 0."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(layers):
        if model == "paper":
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.constant_(m.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)
        else:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


if __name__ == "__main__":
    for name in GEOMETRY:
        net = build(name)
        n = sum(p.numel() for p in net.parameters())
        print(f"{name}: {n:,} parameters, {forward_macs(net, GEOMETRY[name][0]) / 1e6:,.1f} M multiply-adds forward")
    assert math.isclose(sum(p.numel() for p in build("paper").parameters()), 60_965_224)
