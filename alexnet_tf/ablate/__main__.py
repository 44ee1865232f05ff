"""`python -m alexnet_tf.ablate`: see alexnet_tf/ablate/__init__.py."""

from alexnet_tf.ablate import main

raise SystemExit(main())
