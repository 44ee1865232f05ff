"""The paper's recipe, shrunk to train on a 2-core CPU in minutes with no download.

Run:   python -m alexnet_tf.train recipes/quickstart.py --workdir runs/quickstart
Data:  the Fashion-MNIST subset shipped in alexnet_tf/assets (8,000 train / 2,000 test,
       10 classes), grey replicated to RGB.
Needs: any CPU; about 3 minutes on 2 cores.
Reaches: see the README's recipe table (chance is 90% top-1 error).

Only what must change for that budget differs from recipes/paper.py: the input size and
the width (the same builder and layers, Sec. 3.5's geometry at 67 px), the data, the
number of epochs, and a plateau patience that fits a short run.
"""

from paper import get_config as paper_config

from alexnet_tf.config import override


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
            "data.cache": True,
            "model.input_size": 67,
            "model.num_classes": 10,
            "model.width": 0.25,  # a quarter of every layer's kernels and units
            "train.epochs": 8,
            "train.log_every": 20,
            "train.checkpoint_every": 500,
            "optim.plateau_patience": 1,
        },
    )

