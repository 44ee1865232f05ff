"""Development tools, run from the clone's root (`python -m benchmarks.NAME`), not part of
the installed package:

    compare         the speed tables: `python -m alexnet_tf.bench train` / `bench export`
                    lines beside the PyTorch peer's, with ratios
    jpegs           JPEG folders to train from without a download (generated, coloured
                    Fashion-MNIST, rendered digits)
    torch_peer      the PyTorch peer of `bench train` and `bench export` (needs torch)
    torch_net       the peer's net, alexnet_tf's layers in PyTorch
    serve_overhead  the REST server's own CPU per answer, checkouts against each other
    cpu_compare.sh  alexnet_tf against the peer on this CPU, runs alternating, then the tables
"""
