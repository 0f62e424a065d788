"""Old import path of :mod:`effnet.search.study`, kept so code written against earlier READMEs still runs."""

import sys

from effnet.search import study as _module

sys.modules[__name__] = _module
