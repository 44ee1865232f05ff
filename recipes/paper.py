"""AlexNet as in Krizhevsky, Sutskever & Hinton, NIPS 2012: every setting of the paper.

Run:   python -m alexnet_tf.train recipes/paper.py --data folder:/data/imagenet
       (or --data tfds:imagenet2012, or tfrecord:/data/imagenet-256/train-*)
Needs: ImageNet (ILSVRC-2012), one or more GPUs. The paper took 5-6 days on two GTX 580.
Paper: ILSVRC-2012 val top-1 / top-5 error 40.7% / 18.2% (one CNN, 10-crop test).
"""

from alexnet_tf.config import ComputeConfig, Config, DataConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(
            source="tfds:imagenet2012",
            resize_size=256,  # Sec. 2
            crop_size=227,  # Sec. 4.1 (224 in the text; 227 gives Fig. 2's 55x55)
            random_flip=True,  # Sec. 4.1
            pca_noise_std=0.1,  # Sec. 4.1
            subtract_mean=True,  # Sec. 2
        ),
        model=ModelConfig(
            num_classes=1000,
            input_size=227,
            two_columns=True,  # Sec. 3.2
            lrn=True,  # Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75
            lrn_convention="paper",
            # Sec. 3.2: "the GPUs communicate only in certain layers", conv3 and the fully
            # connected ones (Fig. 2), so each GPU normalizes the maps it holds: conv1's and
            # conv2's LRN within a column, as cuda-convnet's two-GPU layer definitions do
            # (rnorm1a: cmrnorm over conv1a's 48 maps, size 5). Sec. 3.3's "N is the total
            # number of kernels in the layer" then bounds the window at the column's edge,
            # the layer as one GPU holds it. Caffe's one-GPU bvlc_alexnet spans all 96 maps
            # ("layer", what an imported bvlc_alexnet uses)
            lrn_scope="column",
            lrn_size=5,
            lrn_alpha=1e-4,
            lrn_beta=0.75,
            overlap_pooling=True,  # Sec. 3.4: z=3, s=2
            activation="relu",  # Sec. 3.1
            dropout=0.5,  # Sec. 4.2
            init_std=0.01,  # Sec. 5
            bias_one=True,  # Sec. 5
        ),
        optim=OptimConfig(
            lr=0.01,  # Sec. 5
            momentum=0.9,  # Sec. 5
            weight_decay=5e-4,  # Sec. 5
            schedule="plateau",  # Sec. 5: /10 when validation error stops improving
            lr_factor=0.1,
            max_reductions=3,  # Sec. 5: three times
            # Sec. 5: "reduced three times prior to termination": a deadline cuts where no
            # plateau did, at the latest after epochs 57, 68 and 79 (0: 90 // 8 = 11 epochs
            # held for each cut to come); "off" leaves Sec. 5's plateau rule alone
            plateau_min_epochs=0,
        ),
        train=TrainConfig(
            batch_size=128,  # Sec. 5
            epochs=90,  # Sec. 5: roughly 90 cycles through 1.2 million images
            log_every=100,
            checkpoint_every=2000,
        ),
        # How the net is computed, not what it is (the same numbers in every form): the
        # convolution and LRN forms, the update op and XLA are left to alexnet_tf.forms
        # ("auto": the fastest on the run's devices)
        compute=ComputeConfig(
            # Training steps per host call: a host call and the read-back of its metrics
            # cost about as much as a GPU step of this net (README, Training speed), so
            # they are shared by 20 steps. No effect on the results; calls stop at
            # log, checkpoint and epoch ends.
            steps_per_loop=20,
        ),
    )
