"""A VB-Net-like 3D network: a residual V-Net whose stages are bottleneck residual blocks, in MONAI layers.

VB-Net (the study's segmenter) is a V-Net in which the plain convolutions of each stage are replaced by
bottleneck residual blocks (1x1x1 reduce, 3x3x3, 1x1x1 expand, added to the input), which keeps deep
stages cheap in memory. Written here with :class:`monai.networks.blocks.Convolution` rather than
``monai.networks.nets.VNet`` because MONAI's VNet has fixed widths (16 channels doubling per level) and no
bottleneck blocks: a site needs a tiny configuration for CPU training and a full one for its GPU workers.
"""

from __future__ import annotations

# The full configuration for GPU workers and the tiny one the tests and CPU benchmarks train.
DEFAULT_ARCHITECTURE = {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128],
                        "blocks": [1, 2, 2, 2]}
TINY_ARCHITECTURE = {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16],
                     "blocks": [1, 1, 1]}


def build_network(architecture):
    """The network described by ``architecture`` (a dict as :data:`DEFAULT_ARCHITECTURE`), on CPU.

    Input: tensor (batch, 1, z, y, x), each spatial size divisible by ``2 ** (len(channels) - 1)``.
    Output: logits (batch, out_channels, z, y, x); channel 1 is the vertebral body.
    """
    import torch
    from monai.networks.blocks import Convolution

    if architecture.get("name") != "vbnet":
        raise ValueError(f"unknown network architecture {architecture.get('name')!r}; expected 'vbnet'")
    channels = [int(c) for c in architecture["channels"]]
    blocks = [int(b) for b in architecture["blocks"]]
    if len(channels) != len(blocks) or len(channels) < 2:
        raise ValueError("architecture needs as many 'blocks' as 'channels', at least two levels")

    def conv(cin, cout, kernel=3, stride=1, act=True, transposed=False):
        return Convolution(3, cin, cout, strides=stride, kernel_size=kernel, act="PRELU" if act else None,
                           norm="INSTANCE", is_transposed=transposed, conv_only=False)

    class Bottleneck(torch.nn.Module):
        """x + (1x1x1 reduce -> 3x3x3 -> 1x1x1 expand), then PReLU."""

        def __init__(self, ch):
            super().__init__()
            mid = max(1, ch // 4)
            self.body = torch.nn.Sequential(conv(ch, mid, 1), conv(mid, mid, 3), conv(mid, ch, 1, act=False))
            self.act = torch.nn.PReLU()

        def forward(self, x):
            return self.act(x + self.body(x))

    def stage(ch, n):
        return torch.nn.Sequential(*[Bottleneck(ch) for _ in range(n)])

    class VBNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(int(architecture.get("in_channels", 1)), channels[0], 3)
            self.enc = torch.nn.ModuleList([stage(channels[0], blocks[0])])
            self.down = torch.nn.ModuleList()
            for i in range(1, len(channels)):
                self.down.append(conv(channels[i - 1], channels[i], 3, stride=2))
                self.enc.append(stage(channels[i], blocks[i]))
            self.up = torch.nn.ModuleList()
            self.merge = torch.nn.ModuleList()
            self.dec = torch.nn.ModuleList()
            for i in range(len(channels) - 1, 0, -1):
                self.up.append(conv(channels[i], channels[i - 1], 3, stride=2, transposed=True))
                self.merge.append(conv(2 * channels[i - 1], channels[i - 1], 1))
                self.dec.append(stage(channels[i - 1], blocks[i - 1]))
            self.head = torch.nn.Conv3d(channels[0], int(architecture.get("out_channels", 2)), kernel_size=1)

        def forward(self, x):
            x = self.enc[0](self.stem(x))
            skips = [x]
            for down, enc in zip(self.down, self.enc[1:]):
                x = enc(down(x))
                skips.append(x)
            for up, merge, dec, skip in zip(self.up, self.merge, self.dec, reversed(skips[:-1])):
                x = dec(merge(torch.cat([up(x), skip], dim=1)))
            return self.head(x)

    return VBNet()
