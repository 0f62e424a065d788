"""Old import path of :mod:`effnet.search.compare`, kept so code written against earlier READMEs still runs."""

import sys

from effnet.search import compare as _module

sys.modules[__name__] = _module
