"""Installs gradual_rnn: Gradual Learning of deep LSTM language models on TensorFlow 2 / Keras 3."""
import setuptools

setuptools.setup(
    name="gradual_rnn",
    version="0.3.0",
    description=(
        "A faithful TensorFlow 2 / Keras 3 port of the Zaremba et al. PTB language model and of "
        "Gradual Learning of Deep Recurrent Neural Networks (Aharoni, Rattner, Permuter 2017)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["gradual_rnn", "gradual_rnn.*"]),
    py_modules=["ptb_word_lm"],
    python_requires=">=3.10,<3.13",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "numpy>=1.23",
        "absl-py>=1.0",
        # tf.summary needs it and TensorFlow >= 2.20 no longer installs it (see BUILD.md).
        "tensorboard>=2.16",
        # tensorflow-datasets 4.9.x imports it without declaring it (tensorflow/datasets#11212).
        "importlib_resources",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.2", "hypothesis>=6", "dill", "matplotlib>=3.7"], "bench": ["torch"],
                    "plot": ["matplotlib>=3.7"]},
    entry_points={"console_scripts": ["gradual-rnn=gradual_rnn.__main__:main",
                                      "ptb_word_lm=ptb_word_lm:run_main"]},
    license="Apache-2.0",
)
