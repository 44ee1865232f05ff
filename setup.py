"""Packaging for alexnet_tf (tool settings live in pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    name="alexnet_tf",
    version="0.1.0",
    description="AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) reproduced in TensorFlow and Keras",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # recipes/ stays at the top of the checkout and ships as alexnet_tf/recipes, where
    # load_recipe finds a recipe by name (alexnet_tf.config.find_recipe)
    packages=[*find_packages(include=["alexnet_tf", "alexnet_tf.*"]), "alexnet_tf.recipes"],
    package_dir={"alexnet_tf.recipes": "recipes"},
    package_data={"alexnet_tf": ["assets/*.npz", "assets/*.md"]},
    license_files=["LICENSE"],
    entry_points={"console_scripts": ["alexnet-tf = alexnet_tf.__main__:main"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorboard>=2.21,<2.22",
        "tensorflow-datasets>=4.9",
        # TFDS 4.9.10 imports it to prepare any dataset but does not declare it
        # (tensorflow/datasets#11212): without it no tfds: source that is not yet prepared works
        "importlib_resources>=5.10",
        "numpy>=1.26",
        "protobuf",  # alexnet_tf.caffemodel reads .caffemodel files with its runtime
        "pillow>=10",  # serve reads image sizes from their headers with it
        # alexnet_tf.lock: one trainer per run folder (flock; fallback_to_soft, preserve_lock_file and
        # on_acquired as in 4.0.8, the version tested); on_acquired needs exceptiongroup before Python 3.11
        "filelock>=4.0.8,<5",
        "exceptiongroup; python_version < '3.11'",
        # serve's fast path: orjson parses and writes JSON in C (numpy arrays included), pybase64
        # decodes {"b64": ...} with SIMD, uvloop runs the event loop on libuv (asyncio's where absent)
        "orjson>=3.9",
        "pybase64>=1.3",
        "uvloop>=0.19; sys_platform != 'win32'",
    ],
    extras_require={
        "plots": ["matplotlib>=3.7"],  # the ablations' Fig. 1 plot, a run's training curves
        "profile": ["tensorboard-plugin-profile>=2.19"],  # TensorBoard's Profile tab (compute.profile_steps)
        "peer": ["torch>=2.4"],  # benchmarks/torch_peer.py, the PyTorch peer of `bench train` and `bench export`
        # pillow: the input benchmark's baseline; matplotlib: the ablation test draws Fig. 1;
        # setuptools, wheel: the packaging test builds a wheel without build isolation;
        # grpcio-tools: protoc, with which the Caffe tests write caffemodels independently of the reader;
        # sybil: reads the code blocks of README.md and docs/ that tests/test_docs.py runs;
        # pytest-xdist: the README's test commands run the tests in as many processes as cores (at most 4)
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "sybil>=9",
            "ruff~=0.17.6",
            "pillow>=10",
            "matplotlib>=3.7",
            "setuptools>=68",
            "wheel",
            "grpcio-tools>=1.85",
        ],
    },
)
