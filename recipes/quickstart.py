"""The paper's recipe, shrunk to train on a 2-core CPU in minutes with no download.

Run:   python -m alexnet_tf.train recipes/quickstart.py --workdir runs/quickstart
Data:  the Fashion-MNIST subset shipped in alexnet_tf/assets (8,000 train / 2,000 test,
       10 classes), grey replicated to RGB.
Needs: any CPU; 2 to 5 minutes on 2 idle cores, by the CPU.
Reaches: see the README's recipe table (chance is 90% top-1 error).

Only what must change for that budget differs from recipes/paper.py: the input size and
the width (the same builder and layers, Sec. 3.5's geometry at 67 px) with the init
scale that keeps the paper's per-layer gain at that width, the data, the number of
epochs, and the CPU-friendly convolution form.
"""

from paper import get_config as paper_config

from alexnet_tf.config import override

WIDTH = 0.25


def get_config():
    base = paper_config()
    return override(
        base,
        {
            "data.source": "builtin:fashion_mnist",
            "data.train_split": "train",
            "data.eval_split": "test",
            "data.resize_size": 76,  # 67 * 256 / 227, the paper's crop-to-image ratio
            "data.crop_size": 67,  # smallest input that keeps every layer of Fig. 2
            "model.input_size": 67,
            "model.num_classes": 10,
            "model.width": WIDTH,  # a quarter of every layer's kernels and units
            # Sec. 5's N(0, 0.01) at full width; at a quarter of the fan-in, 0.01 / sqrt(width)
            # keeps each layer's gain as in the paper's net (0.01 does not start learning
            # within this budget).
            "model.init_std": 0.01 / WIDTH**0.5,
            # On a CPU two plain convolutions beat XLA's grouped one (155 vs 290 ms/step).
            "model.conv_form": "split",
            "train.jit_compile": False,
            "train.epochs": 10,
            "train.log_every": 20,
            "train.checkpoint_every": 500,
        },
    )
