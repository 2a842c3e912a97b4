"""datazone: the gateway of a public-data zone."""

# The institution SDK (`datazone.client`), the shared protocols (`datazone.privacy`) and the
# USCC and purpose vocabularies ship in their own distribution, `datazone-client` (client/ in
# this repository), which adds modules to this same `datazone` name. Extending the path lets
# Python find them wherever that distribution is installed (site-packages, or client/src for an
# editable install), while this package keeps its own __init__.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
