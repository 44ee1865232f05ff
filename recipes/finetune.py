"""Fine-tuning a trained net on new classes: a run that starts from the weights of a
trained net instead of Sec. 5's initialisation (not in the paper; as Caffe's
examples/finetune_flickr_style does with bvlc_alexnet's sibling CaffeNet).

Run:   python -m alexnet_tf.train recipes/finetune.py --data folder:DIR --workdir runs/mine
       starts from Caffe's bvlc_alexnet imported into runs/bvlc_alexnet (`python -m
       alexnet_tf.convert bvlc_alexnet.caffemodel --workdir runs/bvlc_alexnet`); any run
       folder or checkpoint of ours instead: --set finetune.init_from=runs/NAME.
Data:  DIR/train/<class>/* and DIR/val/<class>/*; the classes come from the folder.
Needs: a trained net and a folder of images. On 2 CPU cores a quickstart-size net
       fine-tuned on 1,000 images takes about a minute for the 10 epochs; bvlc_alexnet
       (227 px) trains at about 43 images/s there, so a GPU for more than a few thousand.
Reaches: the README's Fine-tuning section has what it reached from a net trained on
       Fashion-MNIST to 1,000 digits, against the same images from scratch.

What comes from where (alexnet_tf.finetune):
- from the trained net: its architecture and conventions (width, LRN, columns, dropout
  form), how its images were prepared (resize, crop, mean image, channel order, input
  scale) and its training set's statistics. This recipe's own geometry does not matter.
- fc8 is drawn afresh for the data's classes (finetune.new_layers), N(0, 0.01) with bias
  0: Sec. 5's init, and the filler of Caffe's new fc8_flickr layer.
- the rest is recipes/paper.py: Sec. 5's SGD (momentum 0.9, weight decay 5e-4, batch 128),
  Sec. 4.1's random crops, flips and colour noise, Sec. 4.2's dropout; changed below.
"""

from paper import get_config as paper_config

from alexnet_tf.config import override


def get_config():
    return override(
        paper_config(),
        {
            "data.source": "folder:images",  # or --data folder:DIR
            "data.train_split": "train",
            "data.eval_split": "",  # the source's own validation split
            "model.num_classes": 0,  # the data's classes
            "finetune.init_from": "runs/bvlc_alexnet",
            "finetune.new_layers": ("fc8",),  # new classes: a new output layer
            # The new fc8 learns at Sec. 5's 0.01, the copied layers 10x slower: Caffe's
            # finetune_flickr_style (base_lr 0.001, lr_mult 10 on fc8_flickr), "to have the
            # rest of the model change very slowly with new data, but let the new layer
            # learn fast" (its readme)
            "optim.lr": 0.01,
            "finetune.lr_factor": 0.1,
            # Every layer learns, as in Caffe's example. With very few images per class,
            # freezing the copied layers keeps them as trained and makes steps cheaper:
            # --set "finetune.freeze=('conv1', 'conv2', 'conv3', 'conv4', 'conv5')", or
            # all but fc8 (fc7's features with a new linear classifier, Sec. 6.1)
            "finetune.freeze": (),
            # A trained net starts near its end: fewer epochs and one cut of the rate, at a
            # plateau or at the latest after epoch 8 (optim.plateau_min_epochs' default
            # deadline: 10 // 4 = 2 epochs at the last rate). Caffe's solver likewise cuts
            # "lower than if we were training from scratch", every 20,000 iterations, not 100,000
            "train.epochs": 10,
            "optim.max_reductions": 1,
            "train.log_every": 20,
            "train.checkpoint_every": 500,
        },
    )
