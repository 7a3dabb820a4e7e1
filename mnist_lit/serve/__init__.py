"""The local web app of ``python -m mnist_lit serve``: see :mod:`mnist_lit.serve.app`; the page is in ``static/``."""
