"""`python -m alexnet_tf.serve`: see alexnet_tf/serve/__init__.py."""

from alexnet_tf.serve.command import main

raise SystemExit(main())
