"""Old import path of :mod:`effnet.deploy.inference`, kept so code written against earlier READMEs still runs."""

import sys

from effnet.deploy import inference as _module

sys.modules[__name__] = _module
